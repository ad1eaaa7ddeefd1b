"""thrifty.prune against short numpy references given the same labels/centroids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import thrifty
from thrifty import prune


def _data(n=600, d=16, k=8, dup_frac=0.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    lab = rng.integers(0, k, n)
    x = centres[lab] + rng.normal(size=(n, d))
    # near-duplicates: copies of earlier rows with tiny noise
    m = int(n * dup_frac)
    src = rng.integers(0, n - m, m)
    x[n - m:] = x[src] + rng.normal(size=(m, d)) * 1e-3
    lab[n - m:] = lab[src]
    x = x.astype(np.float32)
    c = np.stack([x[lab == j].mean(0) for j in range(k)]).astype(np.float32)
    return x, lab.astype(np.int64), c


def _unit(a):
    a = a.astype(np.float64)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _score(x, lab, c):
    xn, cn = _unit(x).astype(np.float64), _unit(c).astype(np.float64)
    return 1.0 - (xn * cn[lab]).sum(1)


def ref_semdedup(x, lab, c, eps, prefer="hard"):
    n = len(x)
    xn, s = _unit(x), _score(x, lab, c)
    dup = np.full(n, -1)
    sim = np.full(n, np.nan, np.float32)
    for j in np.unique(lab):
        mem = np.flatnonzero(lab == j)
        key = -s[mem] if prefer == "hard" else s[mem]
        mem = mem[np.lexsort((mem, key))]
        e = xn[mem]
        S = e @ e.T  # float32
        for b in range(1, len(mem)):
            row = S[b, :b]
            best = max(range(b), key=lambda i: (row[i], -mem[i]))
            sim[mem[b]] = row[best]
            if row[best] > 1 - eps:
                dup[mem[b]] = mem[best]
    return dup, sim


def _n_keep(n, f):
    return max(1, min(n, math.floor(f * n + 0.5)))


def ref_ssp(x, lab, c, f, prefer="hard"):
    s = _score(x, lab, c)
    idx = np.arange(len(x))
    o = np.lexsort((idx, -s if prefer == "hard" else s))
    out = np.zeros(len(x), bool)
    out[o[:_n_keep(len(x), f)]] = True
    return out


def ref_dbp(x, lab, c, f, l=20, tau=0.5, balance=0.5, prefer="hard"):
    n, k = len(x), len(c)
    s = _score(x, lab, c)
    cn = _unit(c)
    sizes = np.bincount(lab, minlength=k)
    intra = np.array([s[lab == j].mean() if sizes[j] else np.nan for j in range(k)])
    cd = 1.0 - (cn @ cn.T).astype(np.float64)
    ll = min(l, k - 1)
    inter = np.array([np.sort(np.delete(cd[j], j))[:ll].mean() for j in range(k)])
    C = intra * inter
    C[~np.isfinite(C)] = C[np.isfinite(C)].mean()
    P = np.exp((C - C.max()) / tau)
    P /= P.sum()
    N = _n_keep(n, f)
    lb = np.maximum(np.minimum(int(N / k * balance), sizes - 1), 0)
    f_ = lambda lam: np.clip(lam * P, lb, sizes).sum()  # noqa: E731
    lo, hi = 0.0, 1.0
    while f_(hi) < N:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:
            break
        lo, hi = (mid, hi) if f_(mid) <= N else (lo, mid)
    xs = np.clip(lo * P, lb, sizes)
    cnt = np.floor(xs).astype(int)
    rem = N - cnt.sum()
    frac = xs - np.floor(xs)
    for j in np.lexsort((np.arange(k), -frac)):
        if rem and frac[j] > 0 and cnt[j] < sizes[j]:
            cnt[j] += 1
            rem -= 1
    for j in np.lexsort((np.arange(k), -P)):
        a = min(sizes[j] - cnt[j], rem)
        cnt[j] += a
        rem -= a
    keep = np.zeros(n, bool)
    for j in range(k):
        mem = np.flatnonzero(lab == j)
        mem = mem[np.lexsort((mem, -s[mem] if prefer == "hard" else s[mem]))]
        keep[mem[:cnt[j]]] = True
    return keep, cnt, C


@pytest.mark.parametrize("prefer", ["hard", "easy"])
@pytest.mark.parametrize("eps", [0.001, 0.05])
def test_semdedup_matches_numpy(prefer, eps):
    x, lab, c = _data()
    r = prune.semdedup(x, eps=eps, labels=lab, centroids=c, prefer=prefer)
    dup, sim = ref_semdedup(x, lab, c, eps, prefer)
    assert r.prefer == prefer and r.params["prefer"] == prefer
    np.testing.assert_array_equal(r.duplicate_of, dup)
    np.testing.assert_array_equal(r.keep, dup < 0)
    np.testing.assert_allclose(r.similarity, sim, atol=2e-6)
    np.testing.assert_array_equal(r.indices, np.flatnonzero(dup < 0))
    assert r.keep_per_cluster.sum() == r.keep.sum()
    np.testing.assert_allclose(r.score, _score(x, lab, c), atol=1e-6)


def test_semdedup_is_pairwise():
    # a chain a ~ b ~ c where c only matches b: c goes although b was removed
    x = np.array([[1, 0, 0], [1, 0.02, 0], [1, 0.04, 0], [0, 0, 1]], np.float32)
    lab = np.zeros(4, np.int64)
    c = np.array([[0, 0, 1]], np.float32)
    r = prune.semdedup(x, eps=1e-3, labels=lab, centroids=c, prefer="easy")
    dup, _ = ref_semdedup(x, lab, c, 1e-3, "easy")
    np.testing.assert_array_equal(r.duplicate_of, dup)
    assert (r.duplicate_of >= 0).sum() == 2


@pytest.mark.parametrize("prefer", ["hard", "easy"])
@pytest.mark.parametrize("f", [0.1, 0.5, 1.0])
def test_ssp_matches_numpy(prefer, f):
    x, lab, c = _data(seed=1)
    r = prune.ssp(x, keep_fraction=f, labels=lab, centroids=c, prefer=prefer)
    np.testing.assert_array_equal(r.keep, ref_ssp(x, lab, c, f, prefer))
    assert r.prefer == prefer


@pytest.mark.parametrize("f, tau, balance, l", [(0.3, 0.5, 0.5, 20), (0.6, 0.1, 0.0, 3),
                                                 (0.05, 2.0, 1.0, 1)])
def test_dbp_matches_numpy(f, tau, balance, l):
    x, lab, c = _data(n=900, k=12, seed=2)
    r = prune.dbp(x, keep_fraction=f, labels=lab, centroids=c, n_neighbors=l,
                  temperature=tau, balance=balance)
    keep, cnt, C = ref_dbp(x, lab, c, f, l, tau, balance)
    np.testing.assert_allclose(r.complexity, C, rtol=1e-5)
    np.testing.assert_array_equal(r.keep_per_cluster, cnt)
    np.testing.assert_array_equal(r.keep, keep)
    assert r.keep.sum() == _n_keep(900, f)


def test_dbp_easy_matches_numpy():
    x, lab, c = _data(n=900, k=12, seed=2)
    r = prune.dbp(x, keep_fraction=0.3, labels=lab, centroids=c, prefer="easy")
    keep, cnt, _ = ref_dbp(x, lab, c, 0.3, prefer="easy")
    np.testing.assert_array_equal(r.keep_per_cluster, cnt)
    np.testing.assert_array_equal(r.keep, keep)
    assert r.prefer == "easy"


def _auto(kept, groups):
    """The documented rule of prefer="auto"."""
    return "hard" if kept // groups >= 32 else "easy"


@pytest.mark.parametrize("kept", [127, 128, 300])
def test_ssp_auto_switches_at_32_kept_per_class(kept):
    x, lab, c = _data(n=600, seed=11)
    y = np.array(["cat", "dog", "eel", "fox"])[np.arange(600) % 4]  # 4 classes
    f = kept / 600
    r = prune.ssp(x, keep_fraction=f, labels=lab, centroids=c, prefer="auto", y=y)
    want = _auto(kept, 4)
    assert r.keep.sum() == kept and r.prefer == want and r.params["prefer"] == "auto"
    assert r.params["n_classes"] == 4 and r.report()["prefer"] == want
    np.testing.assert_array_equal(r.keep, ref_ssp(x, lab, c, f, want))


@pytest.mark.parametrize("kept", [223, 224])
def test_ssp_auto_counts_non_empty_clusters_without_y(kept):
    x, lab, c = _data(n=600, k=8, seed=12)
    lab[lab == 3] = 0  # cluster 3 is empty: 7 groups, the switch at 7 * 32 = 224
    assert np.unique(lab).size == 7
    f = kept / 600
    r = prune.ssp(x, keep_fraction=f, labels=lab, centroids=c, prefer="auto")
    assert r.prefer == _auto(kept, 7) == ("hard" if kept == 224 else "easy")
    np.testing.assert_array_equal(r.keep, ref_ssp(x, lab, c, f, r.prefer))


@pytest.mark.parametrize("f", [0.1, 0.3, 0.7, 1.0])
def test_dbp_auto_uses_the_kept_count_after_dedup(f):
    x, lab, c = _data(n=900, k=12, seed=13, dup_frac=0.3)
    y = np.arange(900) % 5
    r = prune.dbp(x, keep_fraction=f, labels=lab, centroids=c, dedup_eps=0.01,
                  prefer="auto", y=y)
    dup, _ = ref_semdedup(x, lab, c, 0.01)
    kept = min(_n_keep(900, f), int((dup < 0).sum()))  # duplicates count toward f
    assert r.keep.sum() == kept and r.prefer == _auto(kept, 5)
    same = prune.dbp(x, keep_fraction=f, labels=lab, centroids=c, dedup_eps=0.01,
                     prefer=_auto(kept, 5))
    np.testing.assert_array_equal(r.keep, same.keep)
    if f == 0.1:
        assert r.prefer == "easy"  # 90 // 5 = 18 kept per class
    if f == 0.7:
        assert r.prefer == "hard"


def test_y_is_read_only_by_auto():
    x, lab, c = _data(n=300, seed=14)
    a = prune.dbp(x, keep_fraction=0.4, labels=lab, centroids=c, prefer="easy",
                  y=np.arange(300) % 2)
    b = prune.dbp(x, keep_fraction=0.4, labels=lab, centroids=c, prefer="easy")
    np.testing.assert_array_equal(a.keep, b.keep)


def test_dbp_dedup_counts_toward_fraction():
    x, lab, c = _data(n=600, seed=3, dup_frac=0.3)
    r = prune.dbp(x, keep_fraction=0.5, labels=lab, centroids=c, dedup_eps=0.01)
    dup, _ = ref_semdedup(x, lab, c, 0.01)
    np.testing.assert_array_equal(r.duplicate_of, dup)
    assert r.keep.sum() == 300
    assert not (r.keep & (dup >= 0)).any()


def test_clusters_itself_and_is_deterministic_thread_independent():
    x, _, _ = _data(n=800, seed=4)
    a = prune.dbp(x, keep_fraction=0.4, n_clusters=10, seed=3, dedup_eps=0.01)
    thrifty.set_num_threads(1)
    try:
        b = prune.dbp(x, keep_fraction=0.4, n_clusters=10, seed=3, dedup_eps=0.01)
    finally:
        thrifty.set_num_threads(None)
    np.testing.assert_array_equal(a.keep, b.keep)
    np.testing.assert_array_equal(a.cluster, b.cluster)
    assert a.keep_per_cluster.size == 10
    r = prune.semdedup(x, eps=0.01)  # default clusters
    assert r.keep_per_cluster.size == prune.default_n_clusters(800)


def test_random_order_is_seeded():
    x, lab, c = _data(seed=5)
    a = prune.semdedup(x, eps=0.01, labels=lab, centroids=c, prefer="random", seed=1)
    b = prune.semdedup(x, eps=0.01, labels=lab, centroids=c, prefer="random", seed=1)
    np.testing.assert_array_equal(a.duplicate_of, b.duplicate_of)
    assert a.keep.sum() == prune.semdedup(x, eps=0.01, labels=lab, centroids=c).keep.sum()


def _splitmix_bits(ids: np.ndarray, seed: int) -> np.ndarray:
    """Independent reference for the random order's keys: the top 32 bits of the
    SplitMix64 draw ``mix(mix(seed) ^ (id + 1) * golden)`` (wrapping uint64)."""
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        key = mix(np.array([seed], dtype=np.uint64))
        i = ids.astype(np.uint64)
        u = mix(key ^ ((i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)))
    return (u >> np.uint64(32)).astype(np.uint32)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63, 2**64 - 1])
def test_random_keys_are_the_seeded_order(seed):
    from thrifty import _core

    rng = np.random.default_rng(seed % 2**32)
    ids = np.concatenate([np.arange(5000), rng.integers(0, 2**63 - 1, 2000),
                          [2**63 - 1]]).astype(np.int64)
    keys = _core.prune_random_keys(ids, seed)
    assert keys.dtype == np.uint32 and keys.shape == ids.shape
    np.testing.assert_array_equal(keys, _splitmix_bits(ids, seed))
    assert _core.prune_random_keys(np.zeros(0, np.int64), seed).size == 0
    # one process's prefer="random" keeps the first rows of the (key, row) order
    x, lab, c = _data(seed=7)
    n = x.shape[0]
    s = prune.ssp(x, keep_fraction=0.3, labels=lab, centroids=c, prefer="random", seed=seed)
    want = np.zeros(n, bool)
    want[np.lexsort((np.arange(n), keys[:n]))[:round(0.3 * n)]] = True
    np.testing.assert_array_equal(s.keep, want)


def test_random_keys_refuse_negative_ids():
    from thrifty import _core

    with pytest.raises(thrifty.InvalidInputError, match=r"ids\[2\] = -1"):
        _core.prune_random_keys(np.array([0, 5, -1], np.int64), 0)


def test_report_schema():
    x, lab, c = _data(seed=6)
    r = prune.dbp(x, keep_fraction=0.5, labels=lab, centroids=c, dedup_eps=0.01)
    rep = json.loads(json.dumps(r.report()))
    assert rep["method"] == "dbp" and rep["n_input"] == 600
    assert rep["n_kept"] + rep["n_removed"] == 600
    assert rep["n_duplicates"] == int((r.duplicate_of >= 0).sum())
    assert len(rep["removed"]) == rep["n_removed"]
    assert sum(cl["kept"] for cl in rep["clusters"]) == rep["n_kept"]
    d = [e for e in rep["removed"] if e["reason"] == "duplicate"]
    assert d and all(e["duplicate_of"] is not None and e["similarity"] > 0.99 for e in d)
    assert len(r.report(max_removed=3)["removed"]) == 3


@pytest.mark.parametrize("keep_fraction", [0.5, 1.0])
def test_write_report_streams_exactly_the_json_of_report(keep_fraction):
    import io

    # 9000 rows: more than one 4096-entry write of removals (and none at keep 1.0)
    x, lab, c = _data(n=9000, seed=8)
    r = prune.ssp(x, keep_fraction=keep_fraction, labels=lab, centroids=c)
    r.score[:3] = np.nan  # non-finite numbers are null in both
    buf = io.BytesIO()
    r.write_report(buf, extra={"input": "emb.npy", "note": [1, None]})
    want = json.dumps({**r.report(), "input": "emb.npy", "note": [1, None]}, indent=1)
    assert buf.getvalue() == want.encode()
    assert len(json.loads(want)["removed"]) == (4500 if keep_fraction == 0.5 else 0)
    assert [e["index"] for e in r.removed(max_removed=2)] == np.flatnonzero(~r.keep)[:2].tolist()
    with pytest.raises(thrifty.InvalidInputError, match="max_removed"):
        r.report(max_removed=-1)


def test_write_report_refuses_what_is_not_a_binary_file(tmp_path):
    import io

    x, lab, c = _data(n=300, seed=8)
    r = prune.ssp(x, keep_fraction=0.5, labels=lab, centroids=c)
    text = tmp_path / "r.json"
    with open(text, "w") as f:
        with pytest.raises(thrifty.InvalidInputError, match="text mode.*'wb'"):
            r.write_report(f)
    assert text.read_bytes() == b""  # nothing written
    for bad, match in [(io.StringIO(), "text mode"), (str(text), "not a path"),
                       (text, "not a path"), (42, "no write method")]:
        with pytest.raises(thrifty.InvalidInputError, match=match):
            r.write_report(bad)


@pytest.mark.parametrize("call, match", [
    (lambda x, l, c: prune.semdedup(x, eps=0, labels=l, centroids=c), "eps"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0, labels=l, centroids=c), "keep_fraction"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=1.5, labels=l, centroids=c), "keep_fraction"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l), "both"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l + 100, centroids=c),
     "not a centroid index"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l[:5], centroids=c), "shape"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l, centroids=c[:, :3]), "features"),
    (lambda x, l, c: prune.dbp(x, keep_fraction=0.5, n_clusters=10_000), "larger than"),
    (lambda x, l, c: prune.dbp(x, keep_fraction=0.5, labels=l, centroids=c, temperature=0),
     "temperature"),
    (lambda x, l, c: prune.semdedup(x, eps=0.1, labels=l, centroids=c, prefer="x"), "prefer"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l, centroids=c, prefer="Hard"),
     "prefer"),
    (lambda x, l, c: prune.dbp(x, keep_fraction=0.5, labels=l, centroids=c, prefer=None),
     "prefer"),
    (lambda x, l, c: prune.semdedup(x, eps=0.1, labels=l, centroids=c, prefer="auto"),
     "does not apply to semdedup"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l, centroids=c, prefer="auto",
                               y=l[:50]), r"y must have shape \(100,\)"),
    (lambda x, l, c: prune.dbp(x, keep_fraction=0.5, labels=l, centroids=c, prefer="auto",
                               y=np.where(l == 0, np.nan, 1.0)), "y contains NaN"),
    (lambda x, l, c: prune.ssp(x, keep_fraction=0.5, labels=l, centroids=c, prefer="auto",
                               y=np.array([1, "a"] * 50, dtype=object)), "can not be compared"),
])
def test_bad_input(call, match):
    x, lab, c = _data(n=100, seed=7)
    with pytest.raises(thrifty.InvalidInputError, match=match):
        call(x, lab, c)


def test_nan_rows_rejected():
    x, lab, c = _data(n=100, seed=8)
    x[5, 2] = np.nan
    with pytest.raises(thrifty.InvalidInputError, match="NaN"):
        prune.ssp(x, keep_fraction=0.5, labels=lab, centroids=c)


def test_random_subset():
    r = prune.random_subset(10, keep_fraction=0.35, seed=1)
    assert r.keep.sum() == 4 and r.report()["n_kept"] == 4


def test_semdedup_thread_count_independent():
    x, lab, c = _data(n=1500, k=2, seed=9)  # clusters of ~750: two product blocks
    a = prune.semdedup(x, eps=0.05, labels=lab, centroids=c)
    thrifty.set_num_threads(1)
    try:
        b = prune.semdedup(x, eps=0.05, labels=lab, centroids=c)
    finally:
        thrifty.set_num_threads(None)
    np.testing.assert_array_equal(a.duplicate_of, b.duplicate_of)
    np.testing.assert_array_equal(a.similarity, b.similarity)
    dup, sim = ref_semdedup(x, lab, c, 0.05)
    np.testing.assert_array_equal(a.duplicate_of, dup)
