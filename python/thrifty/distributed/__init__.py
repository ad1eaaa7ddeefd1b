"""k-means, SemDeDup, DBP, SSP, top-k and compression kNN over sharded data, on Ray.

Needs ``pip install 'thrifty[ray]'``. Results equal the single-process calls
(:class:`thrifty.cluster.KMeans`, :mod:`thrifty.prune`, :func:`thrifty.neighbors.topk`,
:class:`thrifty.text.CompressionKNNClassifier`) on the concatenated rows, for any sharding
and any number of workers; see ``docs/distributed.md`` for the decomposition, the
exactness contract and the cost model.

Inputs: a path, directory, glob or list of ``.npy`` shards (float32/float16, ``(n_i, d)``)
or parquet files with an embedding ``column`` (and optionally ``id_column``), or a
``ray.data.Dataset``. Rows are numbered globally in shard order (sorted names for a
directory or glob).

Work is split into logical partitions of ``partition_rows`` rows (a multiple of 4096,
independent of the files); each Ray task reads its ``(path, row range)`` itself. Stages
exchange files in ``work_dir`` (temp + rename, one manifest per stage; ``resume=True``
skips stages whose manifest matches).
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import time
from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from .._progress import ProgressArg, progress_callback
from .._validation import (as_float_matrix, check_bool, check_choice, check_float,
                           check_int)
from ..cluster import KMeans as _LocalKMeans
from ..prune import (PruneResult, _dbp_options, _n_classes, _removed_entries,
                     _semdedup_options, _ssp_options, _cluster_entries, default_n_clusters,
                     _write_report_json)
from . import _lloyd, _stages
from ._executor import RayExecutor, WorkDir, connect
from ._source import BLOCK_ROWS, Source, open_source, partitions, write_npy_atomic

__all__ = ["KMeans", "semdedup", "ssp", "dbp", "topk", "CompressionKNNClassifier",
           "text_kneighbors", "text_predict", "DistributedPruneResult", "ShardedPruneResult",
           "open_source", "connect"]

#: k-means++ without a sample gathers every row on the driver up to this many bytes of
#: float32 rows (k-means++ is sequential over all rows); larger inputs must start from
#: ``init="random"`` or given centroids (trained on the workers) or use a sample
EVERY_ROW_PLUS_PLUS_BYTES = 2 << 30

#: SemDeDup of a cluster above this many rows is split into pairs of row blocks
DEFAULT_BLOCK_ROWS = 32768


def _partition_rows(n: int, rows: int | None, executor: RayExecutor) -> int:
    if rows is not None:
        return check_int(rows, "partition_rows", low=BLOCK_ROWS)
    cpus = max(1, int(executor.ray.cluster_resources().get("CPU", 1)))
    per = math.ceil(n / (4 * cpus) / BLOCK_ROWS) * BLOCK_ROWS
    return min(max(BLOCK_ROWS, per), 1 << 20)


class _Run:
    """One distributed call: source, executor, work dir and its partitions."""

    def __init__(self, inputs: Any, *, column: str | None, id_column: str | None,
                 work_dir: str | None, resume: bool, partition_rows: int | None,
                 num_cpus: int, max_retries: int, progress: ProgressArg, ray: str | None) -> None:
        connect(ray)
        self.work = WorkDir(work_dir, resume=resume)
        try:
            self.source = open_source(inputs, column=column, id_column=id_column,
                                      work_dir=self.work.root, resume=resume)
            self.ex = RayExecutor(num_cpus=num_cpus, max_retries=max_retries, progress=progress)
            self.ex.check_kernels()
            self.parts = partitions(self.source.n, _partition_rows(self.source.n, partition_rows,
                                                                   self.ex))
        except BaseException:
            self.work.close()
            raise
        self.fp = self.source.fingerprint()
        self.resume_ok = True

    def stage(self, name: str, key: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
        """A stage; reused only when it and every stage before it were reused."""
        st, data = self.work.stage(name, {"input": self.fp, "parts": len(self.parts), **key})
        if data is None or not self.resume_ok:
            if data is not None:
                st.reset()
            self.resume_ok = False
            return st, None
        return st, data

    def labels(self, stage_dir: str) -> np.ndarray:
        return np.concatenate([np.load(os.path.join(stage_dir, "labels", f"part-{p:06d}.npy"))
                               for p in range(len(self.parts))])


def _fit_centroids(run: _Run, params: dict[str, Any]) -> tuple[np.ndarray, int, bool]:
    """Train exactly as :class:`thrifty.cluster.KMeans` would: when it subsamples, gather
    the seeded global sample and fit it in one place; when it trains on every row, run
    every Lloyd iteration on the workers (``_lloyd``). Returns ``(centroids, n_iter,
    subsampled)``."""
    src, k = run.source, params["n_clusters"]
    init = params["init"]
    st, data = run.stage("kmeans", {"params": {kk: v for kk, v in params.items()
                                               if kk not in ("init", "progress")},
                                    "init": init if isinstance(init, str) else _digest(init)})
    sample = _core.cluster_kmeans_training_sample(src.n, k, params["max_points_per_centroid"],
                                          params["seed"])
    if data is not None:
        return np.load(os.path.join(st.dir, "centroids.npy")), data["n_iter"], sample is not None
    plus_plus = isinstance(init, str) and init != "random"
    if sample is None and not plus_plus:
        c, n_iter = _lloyd.fit_every_row(run, params)
        write_npy_atomic(st.path("centroids.npy"), c)
        st.finish({"n_iter": n_iter})
        return c, n_iter, False
    if sample is None:
        # k-means++ makes n_clusters sequential passes over every row: not distributed.
        # An input that fits the driver is gathered and trained there, exactly as before.
        need = src.n * src.d * 4
        if need > EVERY_ROW_PLUS_PLUS_BYTES:
            raise InvalidInputError(
                f"k-means++ on every row would gather {need / 2**30:.1f} GiB of float32 rows "
                f"on the driver (more than {EVERY_ROW_PLUS_PLUS_BYTES / 2**30:.0f} GiB): use "
                "init='random' or an array of starting centroids (every Lloyd iteration then "
                "runs on the workers), or max_points_per_centroid to train on a sample")
    rows = np.arange(src.n, dtype=np.int64) if sample is None else sample
    cuts = np.searchsorted(rows, [a for a, _ in run.parts] + [src.n])
    # the pieces come back as files, read one at a time into the training array
    args = [(src, rows[cuts[i]:cuts[i + 1]], st.path(f"sample-{i:06d}.npy"))
            for i in range(len(run.parts)) if cuts[i + 1] > cuts[i]]
    run.ex.map(_stages.gather_task, args, desc="k-means sample")
    train = np.empty((rows.size, src.d), np.float32)
    at = 0
    for _, piece, path in args:
        train[at:at + piece.size] = np.load(path)
        at += piece.size
        os.unlink(path)
    local = {kk: v for kk, v in params.items() if kk != "progress"}
    local["max_points_per_centroid"] = None
    if params["spherical"]:
        z = ~train.any(axis=1)
        if z.any():
            shard, r = src.shard_of(int(rows[np.flatnonzero(z)[0]]))
            raise InvalidInputError(f"{shard.path}: row {r} is an all-zero vector, which has "
                                    "no direction for cosine clustering")
    km = _LocalKMeans(**local, progress=run.ex.progress).fit(train)
    write_npy_atomic(st.path("centroids.npy"), km.cluster_centers_)
    st.finish({"n_iter": km.n_iter_})
    return km.cluster_centers_, km.n_iter_, sample is not None


def _assign(run: _Run, centroids: np.ndarray, spherical: bool, unit_rows: bool,
            labels: np.ndarray | None, n_buckets: int, name: str,
            key: dict[str, Any]) -> tuple[Any, float]:
    """The assignment pass: labels per partition (+ bucket files); returns the stage and
    the inertia (chunk sums in the core's fixed order)."""
    st, data = run.stage(name, {"buckets": n_buckets, **key})
    if data is not None:
        return st, data["inertia"]
    c_ref = run.ex.put(np.ascontiguousarray(centroids, dtype=np.float32))
    l_ref = None if labels is None else run.ex.put(labels)
    args = [(run.source, p, a, b, c_ref, spherical, unit_rows, l_ref, st.dir, n_buckets,
             _stages.ASSIGN_BLOCK_ROWS, _stages.BUCKET_BUFFER_BYTES)
            for p, (a, b) in enumerate(run.parts)]
    sums = run.ex.map(_stages.assign_task, args, desc="assign")
    inertia = _stages.sequential_sum([v for s in sums for v in s])
    st.finish({"inertia": inertia})
    return st, inertia


class KMeans(_LocalKMeans):
    """:class:`thrifty.cluster.KMeans` over sharded inputs on a Ray cluster.

    Same parameters, defaults and fitted attributes (``cluster_centers_``, ``labels_``,
    ``inertia_``, ``n_iter_``), and with the same ``seed`` the same values as the
    single-process estimator on the concatenated rows. With a sample (``n >
    max_points_per_centroid * n_clusters``) the seeded sample of global rows is gathered
    from the shards and trained on the driver; on every row, each Lloyd iteration runs
    on the workers (one task per 2^20-row super-chunk, partials combined by the core's
    fixed tree; nothing per row reaches the driver) when ``init`` is ``"random"`` or an
    array. k-means++ on every row is sequential over all rows: inputs of up to 2 GiB of
    float32 rows are gathered and trained on the driver, larger ones raise
    :class:`thrifty.InvalidInputError`. The assignment of every row runs as one Ray task
    per partition.

    Extra keyword parameters: ``column``, ``id_column`` (parquet), ``work_dir``,
    ``resume``, ``partition_rows``, ``num_cpus`` (per task), ``max_retries``, ``ray``
    (an address, ``"auto"`` or ``"local[:N]"``).
    """

    def __init__(self, n_clusters: int = 8, *, spherical: bool = False, max_iter: int = 100,
                 tol: float = 1e-4, init: Any = "k-means++",
                 max_points_per_centroid: int | None = None, seed: int = 0,
                 progress: ProgressArg = None, column: str | None = None,
                 id_column: str | None = None, work_dir: str | None = None,
                 resume: bool = False, partition_rows: int | None = None, num_cpus: int = 1,
                 max_retries: int = 3, ray: str | None = "auto") -> None:
        super().__init__(n_clusters, spherical=spherical, max_iter=max_iter, tol=tol, init=init,
                         max_points_per_centroid=max_points_per_centroid, seed=seed,
                         progress=progress)
        self.column, self.id_column, self.work_dir = column, id_column, work_dir
        self.resume, self.partition_rows, self.num_cpus = resume, partition_rows, num_cpus
        self.max_retries, self.ray = max_retries, ray

    def _run(self, inputs: Any) -> _Run:
        return _Run(inputs, column=self.column, id_column=self.id_column, work_dir=self.work_dir,
                    resume=self.resume, partition_rows=self.partition_rows,
                    num_cpus=self.num_cpus, max_retries=self.max_retries,
                    progress=self.progress, ray=self.ray)

    def _local_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _LocalKMeans._get_param_names()}

    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Cluster the rows of ``X`` (shards, see the module doc); returns self."""
        run = self._run(X)
        try:
            p = self._local_params()
            k = p["n_clusters"] = check_int(p["n_clusters"], "n_clusters", low=1)
            if k > run.source.n:
                raise InvalidInputError(
                    f"n_clusters ({k}) is larger than the number of points ({run.source.n})")
            if p["max_points_per_centroid"] is not None:
                p["max_points_per_centroid"] = check_int(p["max_points_per_centroid"],
                                                         "max_points_per_centroid", low=1)
            p["seed"] = check_int(p["seed"], "seed", low=0, high=2**64 - 1)
            p["spherical"] = check_bool(p["spherical"], "spherical")
            p["max_iter"] = check_int(p["max_iter"], "max_iter", low=1)
            p["tol"] = check_float(p["tol"], "tol", low=0.0)
            if isinstance(p["init"], str):
                if p["init"] not in ("k-means++", "random"):
                    raise InvalidInputError("init must be 'k-means++', 'random' or an array, "
                                            f"got {p['init']!r}")
            else:
                p["init"] = as_float_matrix(p["init"], "init", n_features=run.source.d)
                if p["init"].shape[0] != k:
                    raise InvalidInputError(f"init has {p['init'].shape[0]} rows but "
                                            f"n_clusters is {k}")
            c, n_iter, sub = _fit_centroids(run, p)
            st, inertia = _assign(run, c, bool(p["spherical"]), sub and bool(p["spherical"]),
                                  None, 0, "fit-assign", {"centroids": _digest(c)})
            self.cluster_centers_ = c
            self.labels_ = run.labels(st.dir)
            self.inertia_ = float(inertia)
            self.n_iter_ = int(n_iter)
            self.n_features_in_ = run.source.d
            return self
        finally:
            run.work.close()

    def predict(self, X: Any, *, out_dir: Any = None) -> Any:
        """Nearest centroid of every row of the shards ``X`` (int64, global row order).

        With ``out_dir`` (a new or empty directory) the labels are not gathered on the
        driver: each input shard's labels are written by a task as
        ``out_dir/part-NNNNN.npy`` (atomically), then ``_manifest.json`` (the input
        shards, their first global row and row count, and the file of each; the output
        is complete once it exists); the paths of the label files are returned, in
        input order."""
        if not hasattr(self, "cluster_centers_"):
            raise InvalidInputError("this KMeans is not fitted yet; call fit first")
        out = _check_out_dir(out_dir)
        run = self._run(X)
        try:
            if run.source.d != self.cluster_centers_.shape[1]:
                raise InvalidInputError(f"X has {run.source.d} features but the centroids have "
                                        f"{self.cluster_centers_.shape[1]}")
            st, _ = _assign(run, self.cluster_centers_, bool(self.spherical), False, None, 0,
                            "predict", {"centroids": _digest(self.cluster_centers_)})
            if out is None:
                return run.labels(st.dir)
            return _write_label_shards(run, os.path.join(st.dir, "labels"), out)
        finally:
            run.work.close()


def _write_label_shards(run: _Run, labels_dir: str, out: str) -> list[str]:
    """One ``part-NNNNN.npy`` of labels per input shard (a task each), then the manifest."""
    from ._source import _write_atomic

    src = run.source
    os.makedirs(out, exist_ok=True)
    args, shards = [], []
    for i, sh in enumerate(src.shards):
        a, b = sh.start, sh.start + sh.rows
        parts = [(p, pa, pb) for p, (pa, pb) in enumerate(run.parts) if pa < b and pb > a]
        name = f"part-{i:05d}.npy"
        args.append((os.path.join(out, name), a, b, parts, labels_dir))
        shards.append({"input": sh.path, "start": a, "rows": sh.rows, "file": name})
    try:
        run.ex.map(_stages.write_labels_task, args, desc="write labels")
    finally:
        # a killed writer leaves its temporary file (its retry writes a new one)
        for t in glob.glob(os.path.join(out, "*.tmp-*")):
            os.unlink(t)
    m = {"n": src.n, "shards": shards}
    _write_atomic(os.path.join(out, "_manifest.json"),
                  lambda f: f.write(json.dumps(m, indent=1).encode()))
    return [os.path.join(out, s["file"]) for s in shards]


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


class DistributedPruneResult(PruneResult):
    """:class:`thrifty.prune.PruneResult` keyed by global row index; ``ids`` holds the
    ``id_column`` value of every row when one was given (else None); ``seconds`` the
    wall time of every stage."""

    ids: list[Any] | None = None
    seconds: dict[str, float] | None = None


def _prune(method: str, inputs: Any, params: dict[str, Any], *, n_clusters: Any, labels: Any,
           y: Any = None,
           centroids: Any, seed: Any, progress: ProgressArg, column: str | None,
           id_column: str | None, work_dir: str | None, resume: bool,
           partition_rows: int | None, buckets: int | None, num_cpus: int, max_retries: int,
           ray: str | None, block_rows: int | None = None, out_dir: Any = None
           ) -> DistributedPruneResult | ShardedPruneResult:
    seed = check_int(seed, "seed", low=0, high=2**64 - 1)
    out = _check_out_dir(out_dir)
    block_rows = (DEFAULT_BLOCK_ROWS if block_rows is None
                  else check_int(block_rows, "block_rows", low=1))
    run = _Run(inputs, column=column, id_column=id_column, work_dir=work_dir, resume=resume,
               partition_rows=partition_rows, num_cpus=num_cpus, max_retries=max_retries,
               progress=progress, ray=ray)
    try:
        if method != "semdedup":
            params = {**params, "n_classes": _n_classes(y, run.source.n)}
        return _prune_run(run, method, params, n_clusters, labels, centroids, seed, buckets,
                          block_rows, out)
    finally:
        run.work.close()


def _prune_run(run: _Run, method: str, params: dict[str, Any], n_clusters: Any, labels: Any,
               centroids: Any, seed: int, buckets: int | None,
               block_rows: int, out_dir: str | None
               ) -> DistributedPruneResult | ShardedPruneResult:
    src = run.source
    n = src.n
    if (labels is None) != (centroids is None):
        raise InvalidInputError("pass both labels and centroids, or neither")
    if labels is not None:
        c = as_float_matrix(centroids, "centroids", n_features=src.d)
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != n:
            raise InvalidInputError(f"labels must have shape ({n},), got {lab.shape}")
        if lab.dtype.kind not in "iu":
            raise InvalidInputError(f"labels must be integers, got dtype {lab.dtype}")
        lab = np.ascontiguousarray(lab, dtype=np.int64)
        train_s = 0.0
        if lab.min() < 0 or lab.max() >= c.shape[0]:
            bad = int(np.flatnonzero((lab < 0) | (lab >= c.shape[0]))[0])
            raise InvalidInputError(f"labels[{bad}] = {lab[bad]} is not a centroid index "
                                    f"(0..{c.shape[0]})")
        unit_rows = False
    else:
        k = default_n_clusters(n) if n_clusters is None else check_int(n_clusters, "n_clusters",
                                                                       low=1)
        if k > n:
            raise InvalidInputError(f"n_clusters ({k}) is larger than the number of points ({n})")
        kp = {"n_clusters": k, "spherical": True, "max_iter": 10, "tol": 1e-4, "init": "random",
              "max_points_per_centroid": 256, "seed": seed}
        t_train = time.perf_counter()
        c, _, unit_rows = _fit_centroids(run, kp)
        train_s = time.perf_counter() - t_train - run.ex.seconds.get("k-means sample", 0.0)
        lab = None
    k = int(c.shape[0])
    params = {**params, "seed": seed, "n_clusters": k}
    # about 64k rows per bucket task (files: partitions x buckets)
    nb = (min(k, max(len(run.parts), math.ceil(n / 65536))) if buckets is None
          else check_int(buckets, "buckets", low=1))
    key = {"centroids": _digest(c), "labels": None if lab is None else _digest(lab)}
    t0 = time.perf_counter()
    st_a, _ = _assign(run, c, True, unit_rows, lab, nb, "assign", {**key, "shuffle": 2})
    # per-cluster pass, one task per bucket
    st_c, data = run.stage("clusters", {**key, "method": method, "params": params, "buckets": nb,
                                        "block_rows": block_rows})
    if data is None:
        data = st_c.finish({"stats": _cluster_pass(run, st_a.dir, st_c, c, method, params, nb,
                                                   block_rows)})
    bucket_file = [os.path.join(st_c.dir, f"bucket-{b:05d}.npz") for b in range(nb)]
    # the groups prefer="auto" counts: the classes of y, else the non-empty clusters
    # (every cluster with a row is in the per-cluster statistics)
    groups = (params["n_classes"] if params.get("n_classes") is not None
              else len({j for st in data["stats"] for j in st["cluster"]}))
    complexity = np.zeros(0, np.float64)
    # how each row's keep is decided, the same for every bucket (DBP: per bucket file)
    rules: list[tuple[Any, ...]]
    if method == "semdedup":
        prefer = params["prefer"]
        rules = [("dup",)] * nb
    elif method == "ssp":
        nk = min(max(1, int(math.floor(params["keep_fraction"] * n + 0.5))), n)
        prefer = _core.prune_resolve_prefer(params["prefer"], nk, groups)
        if prefer == "random":
            rules = [("random", seed, *_random_threshold(run, nk, seed))] * nb
        else:
            rules = [(prefer, *_score_threshold(run, bucket_file, nk, prefer))] * nb
    else:
        intra = np.full(k, np.nan)
        sizes = np.zeros(k, np.int64)
        for st in data["stats"]:
            intra[st["cluster"]] = st["intra"]
            sizes[st["cluster"]] = st["size"]
        # O(k^2 d) on the driver: shows progress per centroid, Ctrl-C stops it
        t_alloc = time.perf_counter()
        with progress_callback(run.ex.progress, desc="dbp allocation", unit="centroid") as cb:
            counts, complexity = _core.prune_dbp_counts(c, intra, sizes, n, params, cb)
        run.ex.seconds["dbp allocation"] = time.perf_counter() - t_alloc
        # "auto" depends on the kept count over the whole input: resolved here, once
        prefer = _core.prune_resolve_prefer(params["prefer"], int(counts.sum()), groups)
        st_s, sel = run.stage("select", {**key, "params": params, "prefer": prefer,
                                         "buckets": nb})
        if sel is None:
            c_ref, n_ref = run.ex.put(c), run.ex.put(counts)
            sel_args = [(st_a.dir, b, bucket_file[b], c_ref, n_ref, prefer, seed,
                         st_s.path(f"keep-{b:05d}.npy")) for b in range(nb)]
            run.ex.map(_stages.select_task, sel_args, desc="dbp select")
            st_s.finish({})
        rules = [("ids", os.path.join(st_s.dir, f"keep-{b:05d}.npy")) for b in range(nb)]
    if out_dir is not None:
        r_out = _write_outputs(run, out_dir, st_a.dir, bucket_file, rules, k, key)
        r_out.method, r_out.prefer, r_out.params = method, prefer, params
        r_out.complexity = complexity
        r_out.seconds = {**run.ex.seconds, "k-means train": train_s}
        _write_manifest(r_out, run.source)
        return r_out
    cluster = run.labels(st_a.dir)
    dup = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    score = np.zeros(n, np.float64)
    keep = np.zeros(n, bool)
    for b, f in enumerate(bucket_file):
        with np.load(f) as z:
            i = z["ids"]
            dup[i], sim[i], score[i] = z["duplicate_of"], z["similarity"], z["score"]
            keep[i] = _stages._keep_by_rule(rules[b], i, dup[i], score[i])
    kpc = np.bincount(cluster[keep], minlength=k).astype(np.int64)
    r = DistributedPruneResult(method, keep, cluster, dup, sim, score, kpc, complexity, prefer,
                               params)
    r.seconds = {**run.ex.seconds, "k-means train": train_s,
                 "driver (gather results)":
                     time.perf_counter() - t0 - sum(run.ex.seconds.get(s, 0.0) for s in (
                         "assign", f"{method} clusters", f"{method} cluster blocks",
                         f"{method} merge blocks", "dbp allocation", "dbp select",
                         "ssp random: histogram", "ssp random: threshold",
                         "ssp score threshold"))}
    if src.id_column is not None:
        r.ids = [v for a, b in run.parts for v in src.read_ids(a, b)]
    return r


def _cluster_pass(run: _Run, assign_dir: str, st: Any, c: np.ndarray, method: str,
                  params: dict[str, Any], nb: int, block_rows: int) -> list[dict[str, Any]]:
    """The per-cluster pass: one task per bucket; then, for the clusters above
    ``block_rows`` rows that need SemDeDup, one task per pair of row blocks and one merge
    task per bucket holding such clusters. Returns the per-cluster statistics."""
    c_ref = run.ex.put(c)
    big_dir = os.path.join(st.dir, "big")
    outs = [st.path(f"bucket-{b:05d}.npz") for b in range(nb)]
    args = [(assign_dir, b, c_ref, method, params, outs[b], block_rows, big_dir)
            for b in range(nb)]
    stats = run.ex.map(_stages.cluster_task, args, desc=f"{method} clusters")
    big = [(b, s["big"]) for b, s in enumerate(stats) if s["big"]]
    if not big:
        return stats
    opts = _stages._dedup_opts(method, params)
    pairs = [(big_dir, j, i, k, c[j:j + 1], opts)
             for _, bl in big for j, m in bl
             for i in range(_stages.n_blocks(m, block_rows))
             for k in range(i + 1, _stages.n_blocks(m, block_rows))]
    run.ex.map(_stages.pair_task, pairs, desc=f"{method} cluster blocks")
    merged = run.ex.map(_stages.finalize_task,
                        [(outs[b], big_dir, bl, block_rows) for b, bl in big],
                        desc=f"{method} merge blocks")
    return stats + merged


class ShardedPruneResult:
    """The outcome of a distributed pruning call given ``out_dir``: the per-row results
    are in ``out_dir``, one directory per input shard, aligned with it (row ``i`` of
    input shard ``s`` is row ``i`` of ``part-<s>/<field>.npy``), and listed in
    ``out_dir/_manifest.json`` (written last).

    Attributes: ``out_dir``, ``method``, ``prefer``, ``params``, ``n_input``, ``n_kept``,
    ``n_duplicates``, ``keep_per_cluster``, ``complexity`` (as in
    :class:`~thrifty.prune.PruneResult`), ``size_per_cluster`` (rows per cluster),
    ``shards`` (one dict per input shard: ``input``, ``start``, ``rows``, ``dir``,
    ``kept``) and ``seconds``. :meth:`paths` names a field's files in shard order;
    :meth:`iter_kept` and :meth:`removed` stream the kept rows and the removals shard by
    shard, :meth:`report` and :meth:`write_report` give the report of
    :meth:`PruneResult.report <thrifty.prune.PruneResult.report>` holding one shard at a
    time; :meth:`load` reads everything into a :class:`DistributedPruneResult` (for
    inputs that fit in memory).
    """

    FIELDS = ("keep", "duplicate_of", "similarity", "score", "cluster")

    def __init__(self, out_dir: str, shards: list[dict[str, Any]],
                 keep_per_cluster: np.ndarray, size_per_cluster: np.ndarray | None = None
                 ) -> None:
        self.out_dir = out_dir
        self.shards = shards
        self.keep_per_cluster = keep_per_cluster
        self.size_per_cluster = (np.zeros(keep_per_cluster.size, np.int64)
                                 if size_per_cluster is None else size_per_cluster)
        self.n_input = int(sum(s["rows"] for s in shards))
        self.n_kept = int(sum(s["kept"] for s in shards))
        self.n_duplicates = int(sum(s["duplicates"] for s in shards))
        self.method = self.prefer = ""
        self.params: dict[str, Any] = {}
        self.complexity = np.zeros(0, np.float64)
        self.seconds: dict[str, float] = {}

    def paths(self, field: str) -> list[str]:
        """The ``.npy`` files of ``field`` (one of :attr:`FIELDS`), in shard order."""
        field = check_choice(field, "field", self.FIELDS)
        return [os.path.join(self.out_dir, s["dir"], f"{field}.npy") for s in self.shards]

    def _load(self, shard: dict[str, Any], field: str) -> np.ndarray:
        return np.load(os.path.join(self.out_dir, shard["dir"], f"{field}.npy"))

    def iter_kept(self) -> Any:
        """The kept global row indices (int64, ascending), one array per input shard."""
        for sh in self.shards:
            yield np.flatnonzero(self._load(sh, "keep")).astype(np.int64) + sh["start"]

    def removed(self, max_removed: int | None = None) -> Any:
        """The ``removed`` entries of :meth:`report`, in index order (the first
        ``max_removed`` when given), read one shard at a time."""
        left = -1 if max_removed is None else check_int(max_removed, "max_removed", low=0)
        for sh in self.shards:
            if left == 0:
                return
            local = np.flatnonzero(~self._load(sh, "keep"))
            if left > 0:
                local = local[:left]
                left -= local.size
            if not local.size:
                continue
            yield from _removed_entries(local, sh["start"], self._load(sh, "duplicate_of"),
                                        self._load(sh, "cluster"), self._load(sh, "similarity"),
                                        self._load(sh, "score"))

    def _report_head(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "prefer": self.prefer,
            "params": dict(self.params),
            "n_input": self.n_input,
            "n_kept": self.n_kept,
            "n_removed": self.n_input - self.n_kept,
            "n_duplicates": self.n_duplicates,
            "clusters": _cluster_entries(self.size_per_cluster, self.keep_per_cluster,
                                        self.complexity),
        }

    def report(self, *, max_removed: int | None = None) -> dict[str, Any]:
        """:meth:`PruneResult.report <thrifty.prune.PruneResult.report>` of the whole
        result (the ``removed`` list in memory: pass ``max_removed``, or use
        :meth:`write_report`, for large inputs)."""
        return {**self._report_head(), "removed": list(self.removed(max_removed))}

    def write_report(self, f: Any, *, extra: dict[str, Any] | None = None) -> None:
        """Write ``json.dumps({**report(), **extra}, indent=1)`` to the binary file
        ``f``, byte for byte, streaming the ``removed`` entries one shard at a time."""
        _write_report_json(f, self._report_head(), self.removed(), extra)

    def load(self) -> DistributedPruneResult:
        """Every field concatenated over the shards (global row order)."""
        cols = {f: np.concatenate([np.load(p) for p in self.paths(f)]) for f in self.FIELDS}
        r = DistributedPruneResult(self.method, cols["keep"], cols["cluster"],
                                   cols["duplicate_of"], cols["similarity"], cols["score"],
                                   self.keep_per_cluster, self.complexity, self.prefer,
                                   self.params)
        r.seconds = self.seconds
        return r


def _check_out_dir(out_dir: Any) -> str | None:
    if out_dir is None:
        return None
    path = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InvalidInputError(f"out_dir {path} exists and is not an empty directory; "
                                "results are never written over other files")
    return path


def _write_outputs(run: _Run, out_dir: str, labels_root: str, bucket_file: list[str],
                   rules: list[tuple[Any, ...]], k: int, key: dict[str, Any]
                   ) -> ShardedPruneResult:
    """Scatter every bucket's results to the partitions of its rows, then write one
    output directory per input shard (tasks; nothing per row passes the driver)."""
    src = run.source
    st, data = run.stage("scatter", {"key": key, "rules": [list(r) for r in rules]})
    if data is None:
        starts = np.array([a for a, _ in run.parts], dtype=np.int64)
        run.ex.map(_stages.scatter_task, [(bucket_file[b], b, starts, rules[b], st.dir)
                                          for b in range(len(bucket_file))],
                   desc="scatter results")
        st.finish({})
    os.makedirs(out_dir, exist_ok=True)
    args = []
    for i, sh in enumerate(src.shards):
        a, b = sh.start, sh.start + sh.rows
        parts = [(p, pa, pb) for p, (pa, pb) in enumerate(run.parts) if pa < b and pb > a]
        args.append((os.path.join(out_dir, f"part-{i:05d}"), a, b, parts,
                     os.path.join(labels_root, "labels"), st.dir, k))
    try:
        done = run.ex.map(_stages.write_shard_task, args, desc="write shards")
    finally:
        # a killed writer leaves its temporary directory (its retry writes a new one);
        # the finished shards stay whole
        for t in glob.glob(os.path.join(out_dir, "*.tmp-*")):
            shutil.rmtree(t, ignore_errors=True)
    kpc = np.zeros(k, np.int64)
    spc = np.zeros(k, np.int64)
    shards = []
    for i, (sh, d) in enumerate(zip(src.shards, done)):
        kpc += d["keep_per_cluster"]
        spc += d["size_per_cluster"]
        shards.append({"input": sh.path, "start": sh.start, "rows": sh.rows,
                       "dir": f"part-{i:05d}", "kept": d["kept"],
                       "duplicates": d["duplicates"]})
    return ShardedPruneResult(out_dir, shards, kpc, spc)


def _write_manifest(r: ShardedPruneResult, src: Source) -> None:
    """``_manifest.json``, written last and atomically: the output is complete once it
    exists."""
    from ._source import _write_atomic

    m = {"method": r.method, "prefer": r.prefer, "params": r.params, "n_input": r.n_input,
         "n_kept": r.n_kept, "n_duplicates": r.n_duplicates, "fields": list(r.FIELDS),
         "id_column": src.id_column, "keep_per_cluster": r.keep_per_cluster.tolist(),
         "size_per_cluster": r.size_per_cluster.tolist(),
         "complexity": [None if not math.isfinite(v) else v for v in r.complexity.tolist()],
         "shards": r.shards}
    _write_atomic(os.path.join(r.out_dir, "_manifest.json"),
                  lambda f: f.write(json.dumps(m, indent=1).encode()))


def _random_threshold(run: _Run, nk: int, seed: int) -> tuple[int, int]:
    """The last of the ``nk`` rows the core's seeded random order puts first over all
    ``n`` rows, as ``(random_bits, id)``: the order is ``(random_bits(id), id)``.

    The draws depend on the global id only, so no rows are read: a histogram of the top
    bits per partition finds the bin holding the ``nk``-th row, and that bin's rows
    (about ``n / RANDOM_BINS``) give the exact last one."""
    parts = run.parts
    hists = run.ex.map(_stages.random_hist_task, [(a, b, seed) for a, b in parts],
                       desc="ssp random: histogram")
    total = np.zeros(_stages.RANDOM_BINS, np.int64)
    for h in hists:
        total += h
    cum = np.cumsum(total)
    bin_ = int(np.searchsorted(cum, nk))  # first bin whose cumulative count reaches nk
    before = int(cum[bin_ - 1]) if bin_ else 0
    got = run.ex.map(_stages.random_bin_task, [(a, b, seed, bin_) for a, b in parts],
                     desc="ssp random: threshold")
    bits = np.concatenate([g[0] for g in got]).astype(np.int64)
    ids = np.concatenate([g[1] for g in got])
    last = np.lexsort((ids, bits))[nk - before - 1]
    return int(bits[last]), int(ids[last])


#: a histogram bin of the SSP score threshold search with at most this many rows is
#: gathered to the driver and sorted there
SCORE_GATHER_ROWS = 1 << 16


def _score_threshold(run: _Run, bucket_file: list[str], nk: int, prefer: str
                     ) -> tuple[float, int]:
    """The last of the ``nk`` rows SSP's ``prefer`` order ("hard": larger score first,
    "easy": smaller first, ties by lower id) puts first over all rows, as ``(score,
    id)``, without gathering the scores.

    The order is the integer order of the 128-bit ``(score_keys(score), id)``
    (:func:`_stages.score_keys`). Each pass counts, per bucket, the rows that share the
    digits found so far by the value of the next 16-bit digit; the driver adds the
    counts and follows the bin holding the ``nk``-th row. Once that bin holds at most
    :data:`SCORE_GATHER_ROWS` rows (at the latest when it is one row: ids are unique),
    its rows are gathered and sorted, which gives the exact row a sort of all the
    scores would give."""
    prefix: list[int] = []
    before = 0  # rows that come before every row of the current bin
    while True:
        got = run.ex.map(_stages.score_hist_task, [(f, prefer, prefix) for f in bucket_file],
                         desc="ssp score threshold")
        total = np.zeros(1 << _stages.SCORE_DIGIT_BITS, np.int64)
        for bins, counts in got:
            np.add.at(total, bins, counts)
        cum = np.cumsum(total)
        bin_ = int(np.searchsorted(cum, nk - before))  # first bin reaching the nk-th row
        before += int(cum[bin_ - 1]) if bin_ else 0
        prefix.append(bin_)
        if total[bin_] <= SCORE_GATHER_ROWS or len(prefix) == _stages.SCORE_DIGITS:
            break
    got = run.ex.map(_stages.score_rows_task, [(f, prefer, prefix) for f in bucket_file],
                     desc="ssp score threshold")
    keys = np.concatenate([g[0] for g in got])
    ids = np.concatenate([g[1] for g in got])
    scores = np.concatenate([g[2] for g in got])
    last = np.lexsort((ids, keys))[nk - before - 1]
    return float(scores[last]), int(ids[last])


_RUN_DOC = """
    Distributed options (keyword-only)
    ----------------------------------
    column, id_column : str, optional
        Parquet embedding column (default ``"embedding"``) and id column.
    work_dir : str, optional
        Directory for the stage files (default: a temporary directory, removed after).
    resume : bool
        Reuse stages whose manifest in ``work_dir`` matches.
    partition_rows : int, optional
        Rows per task (a multiple of 4096; default: about 4 tasks per CPU).
    buckets : int, optional
        Shuffle buckets (cluster ``j`` goes to bucket ``j % buckets``); default about
        65536 rows per bucket, at least one per partition, at most ``n_clusters``.
    num_cpus : int
        CPUs (and thrifty threads) per task.
    out_dir : str, optional
        Write the per-row results (keep, duplicate_of, similarity, score, cluster) as
        ``.npy`` files aligned with the input shards, one directory per shard written
        all or nothing, plus ``_manifest.json`` (written last), into this new or empty
        directory, and return a :class:`ShardedPruneResult` instead of in-memory
        arrays: for inputs whose per-row results should not be gathered in one process.
    max_retries : int
        Re-runs of a task whose worker died.
    ray : str
        ``"auto"``, a cluster address, or ``"local[:N]"``.
"""


def semdedup(X: Any, *, eps: float, n_clusters: int | None = None, labels: Any = None,
             centroids: Any = None, prefer: str = "hard", seed: int = 0,
             progress: ProgressArg = None, column: str | None = None,
             id_column: str | None = None, work_dir: str | None = None, resume: bool = False,
             partition_rows: int | None = None, buckets: int | None = None, num_cpus: int = 1,
             max_retries: int = 3, ray: str | None = "auto",
             block_rows: int | None = None,
             out_dir: str | None = None) -> DistributedPruneResult | ShardedPruneResult:
    """:func:`thrifty.prune.semdedup` over sharded inputs; equal results by global row.

    The SemDeDup of a cluster of more than ``block_rows`` rows (default 32768) runs as
    one task per pair of row blocks of that size; the result is the same.
    """
    return _prune("semdedup", X, _semdedup_options(eps, prefer), n_clusters=n_clusters,
                  labels=labels, centroids=centroids, seed=seed, progress=progress,
                  column=column, id_column=id_column, work_dir=work_dir, resume=resume,
                  partition_rows=partition_rows, buckets=buckets, num_cpus=num_cpus,
                  max_retries=max_retries, ray=ray, block_rows=block_rows,
                  out_dir=out_dir)


def ssp(X: Any, *, keep_fraction: float, n_clusters: int | None = None, labels: Any = None,
        centroids: Any = None, prefer: str = "hard", y: Any = None, seed: int = 0,
        progress: ProgressArg = None,
        column: str | None = None, id_column: str | None = None, work_dir: str | None = None,
        resume: bool = False, partition_rows: int | None = None, buckets: int | None = None,
        num_cpus: int = 1, max_retries: int = 3, ray: str | None = "auto",
        out_dir: str | None = None) -> DistributedPruneResult | ShardedPruneResult:
    """:func:`thrifty.prune.ssp` over sharded inputs; equal results by global row.

    ``prefer="auto"`` resolves over the whole input exactly as one process does (``y``:
    in-memory class labels of every row, in global row order). ``prefer="random"`` keeps
    the rows the core's seeded order puts first: each row's draw depends on its global
    id and the seed only, so the choice does not depend on the sharding.
    """
    return _prune("ssp", X, _ssp_options(keep_fraction, prefer), y=y, n_clusters=n_clusters,
                  labels=labels, centroids=centroids, seed=seed, progress=progress,
                  column=column, id_column=id_column, work_dir=work_dir, resume=resume,
                  partition_rows=partition_rows, buckets=buckets, num_cpus=num_cpus,
                  max_retries=max_retries, ray=ray, out_dir=out_dir)


def dbp(X: Any, *, keep_fraction: float, n_clusters: int | None = None, labels: Any = None,
        centroids: Any = None, n_neighbors: int = 20, temperature: float = 0.5,
        balance: float = 0.5, prefer: str = "hard", y: Any = None,
        dedup_eps: float | None = None, seed: int = 0,
        progress: ProgressArg = None, column: str | None = None, id_column: str | None = None,
        work_dir: str | None = None, resume: bool = False, partition_rows: int | None = None,
        buckets: int | None = None, num_cpus: int = 1, max_retries: int = 3,
        ray: str | None = "auto", block_rows: int | None = None,
        out_dir: str | None = None) -> DistributedPruneResult | ShardedPruneResult:
    """:func:`thrifty.prune.dbp` over sharded inputs; equal results by global row.

    The allocation runs on the driver from per-cluster statistics (k numbers each); the
    per-cluster SemDeDup and selection run one task per bucket (the SemDeDup of a cluster
    of more than ``block_rows`` rows, default 32768, one task per pair of row blocks).
    """
    opts = _dbp_options(keep_fraction, n_neighbors, temperature, balance, prefer, dedup_eps)
    return _prune("dbp", X, opts, y=y, n_clusters=n_clusters, labels=labels, centroids=centroids, seed=seed,
                  progress=progress, column=column, id_column=id_column, work_dir=work_dir,
                  resume=resume, partition_rows=partition_rows, buckets=buckets,
                  num_cpus=num_cpus, max_retries=max_retries, ray=ray, block_rows=block_rows,
                  out_dir=out_dir)


for _f in (semdedup, ssp, dbp):
    _f.__doc__ = (_f.__doc__ or "") + _RUN_DOC


def topk(queries: Any, keys: Any, n_neighbors: int, *, metric: str = "cosine",
         progress: ProgressArg = None, column: str | None = None,
         partition_rows: int | None = None, num_cpus: int = 1, max_retries: int = 3,
         ray: str | None = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`thrifty.neighbors.topk` of in-memory ``queries`` against sharded ``keys``.

    One task per key partition computes its top-k; the driver merges them by
    score, then lower global index: the indices and scores equal the single-process call
    on the concatenated rows.
    """
    metric = check_choice(metric, "metric", ("cosine", "dot", "euclidean"))
    q = as_float_matrix(queries, "queries", finite=False)
    connect(ray)
    src = open_source(keys, column=column)
    if q.shape[1] != src.d:
        raise InvalidInputError(f"queries have {q.shape[1]} features but keys have {src.d}; "
                                "they must match")
    k = check_int(n_neighbors, "n_neighbors", low=1)
    if k > src.n:
        raise InvalidInputError(
            f"n_neighbors must be between 1 and the number of keys ({src.n}), got {k}")
    ex = RayExecutor(num_cpus=num_cpus, max_retries=max_retries, progress=progress)
    ex.check_kernels()
    parts = partitions(src.n, _partition_rows(src.n, partition_rows, ex))
    q_ref = ex.put(q)
    res = ex.map(_stages.topk_task, [(src, a, b, q_ref, k, metric) for a, b in parts],
                 desc="topk")
    return _merge([s for s, _ in res], [i for _, i in res], k,
                  descending=metric != "euclidean")


def _merge(scores: list[np.ndarray], idx: list[np.ndarray], k: int, *, descending: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per row of the concatenated candidates: score, then lower index."""
    s, i = np.concatenate(scores, axis=1), np.concatenate(idx, axis=1)
    key = -s if descending else s
    order = np.lexsort((i, key), axis=-1)[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def text_kneighbors(clf: Any, texts: Any, n_neighbors: int | None = None, *,
                    partition_size: int = 4096, progress: ProgressArg = None,
                    num_cpus: int = 1, max_retries: int = 3, ray: str | None = "auto"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CompressionKNNClassifier.kneighbors` of a fitted classifier, one Ray task
    per block of ``partition_size`` reference texts: ``(distances, indices)``, equal to
    the single-process call (equal distances: lower reference index first)."""
    from ..text import _check_mixture, _Texts

    clf._check_fitted()
    nn = check_int(clf.n_neighbors if n_neighbors is None else n_neighbors, "n_neighbors",
                   low=1)
    if nn > clf.n_samples_fit_:
        raise InvalidInputError(f"n_neighbors={nn} is larger than the number of training "
                                f"texts ({clf.n_samples_fit_})")
    q = texts if isinstance(texts, _Texts) else _Texts(texts, "texts")
    _check_mixture(q, clf._refs)
    size = check_int(partition_size, "partition_size", low=1)
    connect(ray)
    ex = RayExecutor(num_cpus=num_cpus, max_retries=max_retries, progress=progress)
    ex.check_kernels()
    q_ref = ex.put(q.blobs)
    refs, lens = clf._refs.blobs, clf.compressed_lens_
    args = [(q_ref, refs[a:a + size], lens[a:a + size], a, nn, clf.compressor, clf._level,
             clf.distance) for a in range(0, len(refs), size)]
    res = ex.map(_stages.text_knn_task, args, desc="kNN")
    return _merge([d for d, _ in res], [i for _, i in res], nn, descending=False)


def text_predict(clf: Any, texts: Any, *, partition_size: int = 4096,
                 progress: ProgressArg = None, num_cpus: int = 1, max_retries: int = 3,
                 ray: str | None = "auto") -> np.ndarray:
    """:meth:`CompressionKNNClassifier.predict` of a fitted classifier through
    :func:`text_kneighbors` (same options), equal to the single-process call."""
    _, ind = text_kneighbors(clf, texts, clf.n_neighbors, partition_size=partition_size,
                             progress=progress, num_cpus=num_cpus, max_retries=max_retries,
                             ray=ray)
    lab = clf._codes[ind]
    n, c = lab.shape[0], len(clf.classes_)
    flat = (np.arange(n, dtype=np.int64)[:, None] * c + lab).ravel()
    counts = np.bincount(flat, minlength=n * c).reshape(n, c)
    return clf.classes_[clf._decide(counts, lab)]


from ._text import CompressionKNNClassifier  # noqa: E402  (uses _merge above)
