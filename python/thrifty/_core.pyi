"""Type stubs for the compiled extension ``thrifty._core`` (checked with mypy.stubtest)."""

from collections.abc import Callable
from typing import Any, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "__version__",
    "set_num_threads",
    "get_num_threads",
    "_cached_pools",
    "_set_local_threads",
    "build_info",
    "linalg_row_norms_sq",
    "linalg_normalize_rows",
    "linalg_column_mean",
    "_panic",
    "_pool_threads",
    "_busy",
    "text_compressed_len",
    "text_ncd_matrix",
    "text_kneighbors",
    "neighbors_topk",
    "cluster_kmeans",
    "cluster_kmeans_assign",
    "cluster_kmeans_training_sample",
    "cluster_kmeans_super_chunk",
    "cluster_kmeans_lloyd_block",
    "cluster_kmeans_farthest",
    "cluster_kmeans_update",
    "cluster_kmeans_feature_sums",
    "cluster_kmeans_sq_deviations",
    "cluster_tree_add",
    "cluster_kmeans_random_init_rows",
    "cluster_kmeans_start",
    "prune_run",
    "prune_dbp_counts",
    "prune_resolve_prefer",
    "prune_random_keys",
    "neighbors_class_sums",
    "neighbors_nearest_mean_scores",
    "neighbors_nearest_mean_predict",
    "quant_fp_encode",
    "quant_fp_encode_f64",
    "quant_fp_decode",
    "quant_quantize",
    "quant_dequantize",
    "BatchStream",
    "LossFilterCore",
    "data_num_batches",
    "data_check_keep",
    "data_epoch_rows",
    "data_permutation",
    "data_active_loaders",
    "data_temperature_probabilities",
    "data_temperature_loss_weights",
    "data_temperature_sample",
    "data_loss_mask",
]

_Progress = Callable[[int, int], Any] | None

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def _cached_pools() -> list[int]: ...
def _set_local_threads(n: int) -> int: ...
def build_info() -> dict[str, Any]: ...
def linalg_row_norms_sq(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def linalg_normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def linalg_column_mean(x: npt.NDArray[np.float32], progress: _Progress = None) -> npt.NDArray[np.float64]: ...
def _panic(message: str) -> None: ...
def _pool_threads(n_tasks: int) -> tuple[int, int]: ...
def _busy(steps: int, step_ms: int, progress: _Progress = None) -> int: ...
def text_compressed_len(
    texts: list[bytes],
    compressor: str,
    level: int | None = None,
    progress: _Progress = None,
) -> npt.NDArray[np.int64]: ...
def text_ncd_matrix(
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
    n_neighbors: int,
    compressor: str,
    level: int | None = None,
    distance_name: str = "ncd",
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
def neighbors_topk(
    queries: npt.NDArray[np.float32],
    keys: npt.NDArray[np.float32],
    n_neighbors: int,
    metric_name: str,
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def neighbors_class_sums(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.uint32],
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.uint64],
    progress: _Progress = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]: ...
def neighbors_nearest_mean_scores(
    x: npt.NDArray[np.float32], means: npt.NDArray[np.float64], metric_name: str
) -> npt.NDArray[np.float32]: ...
def neighbors_nearest_mean_predict(
    x: npt.NDArray[np.float32],
    means: npt.NDArray[np.float64],
    metric_name: str,
    progress: _Progress = None,
) -> npt.NDArray[np.uint32]: ...
def quant_fp_encode(x: npt.NDArray[np.float32], fmt: str, saturate: bool) -> npt.NDArray[np.uint8]: ...
def quant_fp_encode_f64(x: npt.NDArray[np.float64], fmt: str, saturate: bool) -> npt.NDArray[np.uint8]: ...
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
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32] | None: ...

# ---- data pipelines (thrifty.data)
@final
class BatchStream:
    def __new__(
        cls,
        data: npt.NDArray[np.uint8] | None,
        elem_size: int,
        stride: int,
        width: int,
        n_rows: int,
        *,
        path: str | None = None,
        offset: int = 0,
        labels: npt.NDArray[np.uint8] | None = None,
        label_elem_size: int = 1,
        label_width: int = 1,
        keep: npt.NDArray[np.uint64] | None = None,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        start_batch: int,
        prefetch: int,
    ) -> BatchStream: ...
    def __iter__(self) -> BatchStream: ...
    def __next__(self) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...

@final
class LossFilterCore:
    def __new__(cls, warmup_steps: int, window: int) -> LossFilterCore: ...
    def update(self, losses: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]: ...
    def stats(self) -> tuple[float | None, int, int, int]: ...

def data_num_batches(n_items: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> int: ...
def data_check_keep(keep: npt.NDArray[np.uint64], n_rows: int) -> None: ...
def data_epoch_rows(
    n_rows: int,
    *,
    keep: npt.NDArray[np.uint64] | None = None,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> npt.NDArray[np.uint64]: ...
def data_permutation(n: int, seed: int, epoch: int, start: int, count: int) -> npt.NDArray[np.uint64]: ...
def data_active_loaders() -> int: ...
def data_temperature_probabilities(
    sizes: list[int], temperature: float, cooldown: tuple[float, int, int] | None, step: int
) -> tuple[float, npt.NDArray[np.float64]]: ...
def data_temperature_loss_weights(
    sizes: list[int], temperature: float, cooldown: tuple[float, int, int] | None, step: int
) -> npt.NDArray[np.float64]: ...
def data_temperature_sample(
    sizes: list[int],
    temperature: float,
    cooldown: tuple[float, int, int] | None,
    seed: int,
    step: int,
    counts: list[int],
    n: int,
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...
def data_loss_mask(losses: npt.NDArray[np.float64], threshold: float) -> npt.NDArray[np.bool_]: ...
def cluster_kmeans(
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
def cluster_kmeans_assign(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    spherical: bool,
    progress: Callable[[int, int], Any] | None = None,
    unit_rows: bool = False,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
def cluster_kmeans_training_sample(
    n: int, n_clusters: int, max_points_per_centroid: int | None, seed: int
) -> npt.NDArray[np.int64] | None: ...

def cluster_kmeans_super_chunk() -> int: ...

def cluster_kmeans_lloyd_block(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    spherical: bool,
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    progress: Callable[[int, int], Any] | None = None,
) -> None: ...
def cluster_kmeans_farthest(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    spherical: bool,
    e: int,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float32]
]: ...
def cluster_kmeans_update(
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    centroids: npt.NDArray[np.float32],
    spherical: bool,
    reseed: npt.NDArray[np.float32],
    reseed_labels: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float32], float]: ...
def cluster_kmeans_feature_sums(
    x: npt.NDArray[np.float32], spherical: bool, acc: npt.NDArray[np.float64]
) -> None: ...
def cluster_kmeans_sq_deviations(
    x: npt.NDArray[np.float32], spherical: bool, mean: npt.NDArray[np.float64], acc: float
) -> float: ...
def cluster_tree_add(left: npt.NDArray[np.float64], right: npt.NDArray[np.float64]) -> None: ...
def cluster_kmeans_random_init_rows(n: int, n_clusters: int, seed: int) -> npt.NDArray[np.int64]: ...
def cluster_kmeans_start(
    init: npt.NDArray[np.float32], spherical: bool, from_rows: bool
) -> npt.NDArray[np.float32]: ...

_PruneOut = tuple[
    npt.NDArray[np.bool_],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    str,
]

def prune_run(
    method_name: str,
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    centroids: npt.NDArray[np.float32],
    params: dict[str, Any],
    progress: Callable[[int, int], Any] | None = None,
    ids: npt.NDArray[np.int64] | None = None,
) -> _PruneOut: ...
def prune_dbp_counts(
    centroids: npt.NDArray[np.float32],
    intra: npt.NDArray[np.float64],
    sizes: npt.NDArray[np.int64],
    n_input: int,
    params: dict[str, Any],
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
def prune_resolve_prefer(prefer: str, kept: int, groups: int) -> str: ...
def prune_random_keys(ids: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.uint32]: ...
