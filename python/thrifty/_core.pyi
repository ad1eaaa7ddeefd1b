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
    "compressed_len",
    "ncd_matrix",
    "text_kneighbors",
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
def compressed_len(
    texts: list[bytes], compressor: str, level: int | None = None, progress: _Progress = None
) -> npt.NDArray[np.int64]: ...
def ncd_matrix(
    queries: list[bytes],
    refs: list[bytes],
    compressor: str,
    level: int | None = None,
    distance_name: str = "ncd",
    progress: _Progress = None,
) -> npt.NDArray[np.float64]: ...
def text_kneighbors(
    queries: list[bytes],
    refs: list[bytes],
    ref_lens: npt.NDArray[np.int64],
    k: int,
    compressor: str,
    level: int | None = None,
    distance_name: str = "ncd",
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
