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
    "topk",
    "kmeans",
    "kmeans_assign",
    "semdedup",
    "ssp",
    "dbp",
    "class_sums",
    "nearest_mean_scores",
    "nearest_mean_predict",
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
def topk(
    queries: npt.NDArray[np.float32],
    keys: npt.NDArray[np.float32],
    k: int,
    metric_name: str,
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def class_sums(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.uint32],
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.uint64],
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]: ...
def nearest_mean_scores(
    x: npt.NDArray[np.float32], means: npt.NDArray[np.float64], metric_name: str
) -> npt.NDArray[np.float32]: ...
def nearest_mean_predict(
    x: npt.NDArray[np.float32],
    means: npt.NDArray[np.float64],
    metric_name: str,
    progress: _Progress = None,
) -> npt.NDArray[np.uint32]: ...
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

def kmeans(
    x: npt.NDArray[np.float32],
    n_clusters: int,
    spherical: bool,
    max_iter: int,
    tol: float,
    init: str,
    init_centroids: npt.NDArray[np.float32] | None,
    max_points_per_centroid: int | None,
    seed: int,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], float, int]: ...
def kmeans_assign(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    spherical: bool,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

_PruneOut = tuple[
    npt.NDArray[np.bool_],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
]

def semdedup(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    centroids: npt.NDArray[np.float32],
    eps: float,
    order_name: str,
    seed: int,
    progress: Callable[[int, int], Any] | None = None,
) -> _PruneOut: ...
def ssp(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    centroids: npt.NDArray[np.float32],
    keep_fraction: float,
    keep: str,
    seed: int,
    progress: Callable[[int, int], Any] | None = None,
) -> _PruneOut: ...
def dbp(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    centroids: npt.NDArray[np.float32],
    keep_fraction: float,
    n_neighbors: int,
    temperature: float,
    balance: float,
    keep: str,
    dedup_eps: float | None,
    seed: int,
    progress: Callable[[int, int], Any] | None = None,
) -> _PruneOut: ...
