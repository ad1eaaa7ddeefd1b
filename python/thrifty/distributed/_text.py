"""Compression kNN whose reference texts stay in shards (``.txt``, ``.jsonl``, parquet).

Each Ray task reads one reference shard, compresses its texts and returns the top-k of
every query among them; the driver merges by distance, then lower global index, so
:meth:`CompressionKNNClassifier.kneighbors` / :meth:`~CompressionKNNClassifier.predict` equal
:class:`thrifty.text.CompressionKNNClassifier` fitted on the concatenated texts.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np

from .. import _core
from .._base import check_fitted
from .._errors import FormatError, InvalidInputError, ThriftyIOError
from .._progress import ProgressArg
from .._validation import check_int
from ..text import CompressionKNNClassifier as _LocalCompressionKNN
from ..text import _check_mixture, _label_classes, _Texts
from ._executor import RayExecutor, connect, fault_point

__all__ = ["CompressionKNNClassifier", "read_texts"]

_KINDS = (".txt", ".jsonl", ".parquet")


def read_texts(path: str, field: str) -> list[str]:
    """The texts of one shard: ``.txt`` one per line (line ending removed), ``.jsonl`` the
    ``field`` of each line's object, parquet the ``field`` column."""
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            try:
                return [str(v) for v in pq.read_table(path, columns=[field]).column(0).to_pylist()]
            except (KeyError, ValueError) as e:
                raise FormatError(f"{path}: no readable text column {field!r}: {e}") from None
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ThriftyIOError(f"{path}: shard not found") from None
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text: {e}") from None
    if path.endswith(".txt"):
        return lines
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(str(json.loads(line)[field]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise FormatError(f"{path}: line {i + 1} is not a JSON object with {field!r}: "
                              f"{e}") from None
    return out


def _read_labels(path: str, field: str) -> list[Any]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        return list(pq.read_table(path, columns=[field]).column(0).to_pylist())
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)[field] for line in f.read().splitlines()]
    raise InvalidInputError(f"{path}: .txt shards carry no labels; pass y")


def _shard_task(path: str, field: str, start: int, queries: list[bytes], k: int,
                compressor: str, level: int | None, distance: str
                ) -> tuple[np.ndarray, np.ndarray]:
    fault_point("text_knn")
    try:
        refs = _Texts(read_texts(path, field), os.path.basename(path))
    except InvalidInputError as e:
        raise InvalidInputError(f"{path}: {e}") from None
    lens = _core.text_compressed_len(refs.blobs, compressor, level, None)
    ind, dist = _core.text_kneighbors(queries, refs.blobs, lens, min(k, len(refs)), compressor,
                                      level, distance, None)
    return dist, ind + start


class CompressionKNNClassifier(_LocalCompressionKNN):
    """:class:`thrifty.text.CompressionKNNClassifier` with reference texts in shards.

    Same parameters; ``fit(shards, y=None)`` takes a path, directory, glob or list of
    ``.txt`` / ``.jsonl`` / ``.parquet`` shards (texts numbered in shard order, sorted
    names for a directory or glob) and labels ``y`` or a ``label_field`` of the
    jsonl/parquet shards; only the labels and the shard sizes are read on the driver.
    ``kneighbors`` and ``predict`` run one Ray task per shard.
    """

    def __init__(self, n_neighbors: int = 2, *, compressor: str = "gzip",
                 level: int | None = None, distance: str = "ncd", tie_break: str = "nearest",
                 seed: int = 0, progress: ProgressArg = None, text_field: str = "text",
                 label_field: str | None = "label", num_cpus: int = 1, max_retries: int = 3,
                 ray: str | None = "auto") -> None:
        super().__init__(n_neighbors, compressor=compressor, level=level, distance=distance,
                         tie_break=tie_break, seed=seed, progress=progress)
        self.text_field, self.label_field = text_field, label_field
        self.num_cpus, self.max_retries, self.ray = num_cpus, max_retries, ray

    def fit(self, texts: Any, y: Any = None) -> CompressionKNNClassifier:  # type: ignore[override]
        """Describe the reference shards ``texts`` and read their labels."""
        from ._source import _expand

        k, level = self._check_params()
        items = [os.fspath(texts)] if isinstance(texts, (str, os.PathLike)) else [
            os.fspath(p) for p in texts]
        paths = [p for it in items for p in _expand_texts(it, _expand)]
        sizes, labels = [], []
        for p in paths:
            if not p.endswith(_KINDS):
                raise FormatError(f"{p}: unsupported text shard; expected .txt, .jsonl or .parquet")
            n = len(read_texts(p, self.text_field))
            if n == 0:
                raise InvalidInputError(f"{p}: empty shard")
            sizes.append(n)
            if y is None:
                if self.label_field is None:
                    raise InvalidInputError("pass y or label_field")
                labels.extend(_read_labels(p, self.label_field))
        n_total = int(sum(sizes))
        self.classes_, self._codes = _label_classes(labels if y is None else y, n_total)
        if k > n_total:
            raise InvalidInputError(f"n_neighbors={k} is larger than the number of training "
                                    f"texts ({n_total})")
        self._level = level
        self.shards_ = paths
        self.shard_starts_ = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.n_samples_fit_ = n_total
        self.compressed_lens_ = np.zeros(0, np.int64)  # computed per shard, in the tasks
        return self

    def _check_fitted(self) -> None:
        check_fitted(self, "shards_")

    def _neighbors(self, texts: Any, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        from . import _merge

        self._check_fitted()
        q = texts if isinstance(texts, _Texts) else _Texts(texts, "texts")
        _check_mixture(q)
        n = check_int(n_neighbors, "n_neighbors", low=1)
        if n > self.n_samples_fit_:
            raise InvalidInputError(f"n_neighbors={n} is larger than the number of training "
                                    f"texts ({self.n_samples_fit_})")
        connect(self.ray)
        ex = RayExecutor(num_cpus=self.num_cpus, max_retries=self.max_retries,
                         progress=self.progress)
        ex.check_kernels()
        q_ref = ex.put(q.blobs)
        args = [(p, self.text_field, int(s), q_ref, n, self.compressor, self._level,
                 self.distance) for p, s in zip(self.shards_, self.shard_starts_)]
        res = ex.map(_shard_task, args, desc="kNN")
        return _merge([d for d, _ in res], [i for _, i in res], n, descending=False)


def _expand_texts(item: str, expand: Any) -> list[str]:
    if os.path.isdir(item):
        found = sorted(p for p in glob.glob(os.path.join(item, "*")) if p.endswith(_KINDS))
        if not found:
            raise InvalidInputError(f"{item}: directory holds no .txt, .jsonl or .parquet shards")
        return found
    return list(expand(item))
