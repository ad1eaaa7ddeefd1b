"""Type stubs for the compiled extension ``thrifty._core`` (checked with mypy.stubtest)."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "__version__",
    "set_num_threads",
    "get_num_threads",
    "build_info",
    "row_norms_sq",
    "normalize_rows",
    "column_mean",
    "_panic",
    "_pool_threads",
    "_busy",
    "quant_fp_encode",
    "quant_fp_decode",
    "quant_quantize",
    "quant_dequantize",
]

_Progress = Callable[[int, int], Any] | None

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> dict[str, Any]: ...
def row_norms_sq(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def column_mean(x: npt.NDArray[np.float32], progress: _Progress = None) -> npt.NDArray[np.float64]: ...
def _panic(message: str) -> None: ...
def _pool_threads(n_tasks: int) -> tuple[int, int]: ...
def _busy(steps: int, step_ms: int, progress: _Progress = None) -> int: ...
def quant_fp_encode(x: npt.NDArray[np.float32], fmt: str, saturate: bool) -> npt.NDArray[np.uint8]: ...
def quant_fp_decode(codes: npt.NDArray[np.uint8], fmt: str) -> npt.NDArray[np.float32]: ...
def quant_quantize(
    x: npt.NDArray[np.float32],
    fmt: str,
    rows: int,
    cols: int,
    group_size: int | None,
    scale: str,
    scale_value: float,
    symmetric: bool,
    seed: int | None,
    saturate: bool,
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.float32] | npt.NDArray[np.uint8] | None,
    npt.NDArray[np.float32] | None,
    float | None,
    int,
]: ...
def quant_dequantize(
    fmt: str,
    rows: int,
    cols: int,
    group_size: int,
    data: npt.NDArray[np.uint8],
    scales_f32: npt.NDArray[np.float32] | None,
    scales_u8: npt.NDArray[np.uint8] | None,
    zero_points: npt.NDArray[np.float32] | None,
    tensor_scale: float | None,
) -> npt.NDArray[np.float32]: ...
