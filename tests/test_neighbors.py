"""thrifty.neighbors against numpy brute force and scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import thrifty
from thrifty import InvalidInputError
from thrifty.neighbors import KNNClassifier, NearestMeanClassifier, interpolate, topk


# ---------------------------------------------------------------------------------------
# reference: numpy brute force, float64 scores, order (better score, lower index)


def ref_scores(q, x, metric):
    q = q.astype(np.float64)
    x = x.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if metric == "euclidean":
        return ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return q @ x.T


def ref_topk(q, x, k, metric):
    s = ref_scores(q, x, metric)
    key = s if metric == "euclidean" else -s
    idx = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), key.shape), key), axis=1)[:, :k]
    return np.take_along_axis(s, idx, 1), idx


def int_data(rng, n, d, r=2):
    return rng.integers(-r, r + 1, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_topk_exact_on_integer_data_with_many_ties(rng, metric):
    # Integer data: every float32 operation is exact, so scores and tie order must be too.
    x = int_data(rng, 400, 24)
    x[300:] = x[:100]  # duplicate keys
    q = np.concatenate([x[:50], int_data(rng, 70, 24)])  # queries equal to keys
    for k in (1, 10, 400):  # k = n included
        s, i = topk(q, x, k, metric=metric)
        ws, wi = ref_topk(q, x, k, metric)
        assert i.dtype == np.int64 and s.dtype == np.float32 and s.shape == (120, k)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(s, ws.astype(np.float32))


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_topk_matches_reference_on_gaussian_data(rng, metric):
    x = rng.standard_normal((3000, 96), dtype=np.float32)
    x[2000:2100] = x[:100]  # duplicates
    q = np.concatenate([x[:40], rng.standard_normal((300, 96), dtype=np.float32)])
    s, i = topk(q, x, 10, metric=metric)
    ws, wi = ref_topk(q, x, 10, metric)
    np.testing.assert_allclose(s, ws, rtol=1e-4, atol=1e-4)
    # indices agree except where the reference itself has a near-tie
    ref = ref_scores(q, x, metric)
    got_scores = np.take_along_axis(ref, i, 1)
    np.testing.assert_allclose(got_scores, ws, rtol=1e-5, atol=1e-5)
    mismatch = i != wi
    assert mismatch.mean() < 0.01
    # exact duplicates tie bit-for-bit and come lower index first
    if metric != "dot":
        assert (i[:40, 0] == np.arange(40)).all()
        assert (i[:40, 1] == np.arange(40) + 2000).all()
        np.testing.assert_array_equal(s[:40, 0], s[:40, 1])


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 30),
    n=st.integers(1, 80),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    metric=st.sampled_from(["dot", "euclidean"]),
    data=st.data(),
)
def test_topk_property_exact_integer(m, n, d, seed, metric, data):
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, n))
    q = int_data(rng, m, d, 3)
    x = int_data(rng, n, d, 3)
    s, i = topk(q, x, k, metric=metric)
    ws, wi = ref_topk(q, x, k, metric)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(s, ws.astype(np.float32))


def test_topk_independent_of_thread_count_and_batching(rng):
    x = rng.standard_normal((5000, 64), dtype=np.float32)
    q = rng.standard_normal((700, 64), dtype=np.float32)
    out = []
    for t in (1, 2, 3):
        thrifty.set_num_threads(t)
        out.append(topk(q, x, 7, metric="cosine", progress=False))
    for s, i in out[1:]:
        np.testing.assert_array_equal(s, out[0][0])
        np.testing.assert_array_equal(i, out[0][1])
    # one query at a time gives the same bits (keys split differently)
    s1, i1 = topk(q[5:6], x, 7, metric="cosine")
    np.testing.assert_array_equal(s1[0], out[0][0][5])
    np.testing.assert_array_equal(i1[0], out[0][1][5])


def test_topk_accepts_float16_float64_lists_and_memmap(rng, tmp_path):
    x = int_data(rng, 300, 16)
    q = int_data(rng, 20, 16)
    want = topk(q, x, 5, metric="dot")
    for conv in (np.float16, np.float64):
        got = topk(q.astype(conv), x.astype(conv), 5, metric="dot")
        np.testing.assert_array_equal(got[1], want[1])
    got = topk(q.tolist(), np.asfortranarray(x), 5, metric="dot")
    np.testing.assert_array_equal(got[1], want[1])
    path = tmp_path / "keys.f32"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    got = topk(q, mm, 5, metric="dot")
    np.testing.assert_array_equal(got[1], want[1])


def test_topk_progress_callback(rng):
    x = rng.standard_normal((500, 8), dtype=np.float32)
    seen = []
    topk(x, x, 3, metric="dot", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda q, x: topk(q, x, 0), "n_neighbors must be"),
        (lambda q, x: topk(q, x, 11), "n_neighbors must be"),
        (lambda q, x: topk(q, x[:, :3], 1), "features"),
        (lambda q, x: topk(q[:0], x, 1), "empty"),
        (lambda q, x: topk(q, x, 1, metric="manhattan"), "metric"),
        (lambda q, x: topk(np.where(q > 0, np.nan, q), x, 1), "non-finite"),
        (lambda q, x: topk(q, np.full_like(x, np.inf), 1), "non-finite"),
        (lambda q, x: topk(q.astype(np.int32), x, 1), "floating-point"),
        (lambda q, x: topk(q[0], x, 1), "2-D"),
    ],
)
def test_topk_bad_input(rng, call, match):
    q = rng.standard_normal((4, 5), dtype=np.float32)
    x = rng.standard_normal((10, 5), dtype=np.float32)
    with pytest.raises(InvalidInputError, match=match):
        call(q, x)


# ---------------------------------------------------------------------------------------
# nearest mean


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_")
def test_nmc_equals_sklearn_nearest_centroid_on_digits(digits):
    from sklearn.neighbors import NearestCentroid

    X, y = digits
    Xtr, ytr, Xte = X[::2], y[::2], X[1::2]
    ours = NearestMeanClassifier().fit(Xtr, ytr)
    ref = NearestCentroid().fit(Xtr, ytr)
    np.testing.assert_array_equal(ours.predict(Xte), ref.predict(Xte))
    np.testing.assert_array_equal(ours.predict(Xtr), ref.predict(Xtr))
    np.testing.assert_allclose(ours.means_, ref.centroids_, rtol=1e-12)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    assert ours.score(Xte, y[1::2]) == pytest.approx(ref.score(Xte, y[1::2]))


def test_nmc_cosine_equals_numpy_reference(digits):
    X, y = digits
    clf = NearestMeanClassifier(metric="cosine").fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in clf.classes_])
    sims = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (
        means / np.linalg.norm(means, axis=1, keepdims=True)
    ).T
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[sims.argmax(1)])
    np.testing.assert_allclose(clf.decision_function(X), sims, atol=1e-5)


def test_nmc_streaming_equals_one_shot_bitwise(rng, digits):
    X, y = digits
    one = NearestMeanClassifier().fit(X, y)
    perm_classes = [np.flatnonzero(np.isin(y, g)) for g in ([7, 3], [0, 9, 1], [2, 4, 5, 6, 8])]
    order = np.concatenate(perm_classes)
    # same row order, arbitrary chunking, classes arriving in any order
    ref = NearestMeanClassifier().fit(X[order], y[order])
    stream = NearestMeanClassifier()
    for chunk in np.array_split(order, 17):
        stream.partial_fit(X[chunk], y[chunk])
    np.testing.assert_array_equal(stream.means_, ref.means_)
    np.testing.assert_array_equal(stream.counts_, ref.counts_)
    np.testing.assert_array_equal(stream.classes_, np.arange(10))
    np.testing.assert_allclose(stream.means_, one.means_, rtol=1e-13)
    np.testing.assert_array_equal(stream.predict(X), one.predict(X))


def test_nmc_thread_count_independent(digits):
    X, y = digits
    res = []
    for t in (1, 2, 3):
        thrifty.set_num_threads(t)
        clf = NearestMeanClassifier().fit(X, y)
        res.append((clf.means_, clf.decision_function(X), clf.predict(X)))
    for r in res[1:]:
        for a, b in zip(r, res[0]):
            np.testing.assert_array_equal(a, b)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_nmc_predict_proba_and_decision(digits):
    X, y = digits
    clf = NearestMeanClassifier().fit(X, y)
    d = ((X[:, None, :] - clf.means_[None]) ** 2).sum(-1)
    np.testing.assert_allclose(clf.decision_function(X), -d, rtol=1e-4, atol=1e-2)
    # reference: isotropic Gaussian classes with the pooled within-class variance
    means = np.stack([X[y == c].mean(0) for c in range(10)])
    v = ((X - means[y]) ** 2).sum() / ((X.shape[0] - 10) * X.shape[1])
    assert clf.within_class_variance_ == pytest.approx(v, rel=1e-9)
    for t in (1.0, 5.0):
        p = clf.predict_proba(X[:200], temperature=t)
        np.testing.assert_allclose(p, _softmax(-d[:200] / (2 * v * t)), atol=1e-4)
    with pytest.raises(InvalidInputError, match="temperature"):
        clf.predict_proba(X, temperature=0)


def test_nmc_predict_proba_does_not_saturate_on_unscaled_data_and_is_scale_free(digits):
    X, y = digits  # raw pixel values 0..16: squared distances in the hundreds
    clf = NearestMeanClassifier().fit(X, y)
    d = ((X[:300, None, :] - clf.means_[None]) ** 2).sum(-1)
    raw = _softmax(-d)  # softmax of the raw negative squared distances
    # what a temperature of 1 alone gives: mostly exact 0/1 probabilities
    assert (raw.max(1) == 1.0).mean() > 0.9 and (raw == 0.0).mean() > 0.5
    p = clf.predict_proba(X[:300])
    assert (p == 0.0).sum() == 0 and (p.max(1) == 1.0).mean() < 0.5
    assert (p.max(1) < 0.99).mean() > 0.05
    assert np.array_equal(clf.classes_[p.argmax(1)], clf.predict(X[:300]))
    big = NearestMeanClassifier().fit(X * 1000.0, y)
    np.testing.assert_allclose(big.predict_proba(X[:300] * 1000.0), p, atol=1e-3)  # float32 scores
    assert big.within_class_variance_ == pytest.approx(clf.within_class_variance_ * 1e6, rel=1e-9)


def test_nmc_string_labels_and_ties():
    X = np.array([[0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    clf = NearestMeanClassifier().fit(X, ["zeta", "alpha"])
    assert clf.classes_.tolist() == ["alpha", "zeta"]
    # exactly between the two means: the smaller label wins
    assert clf.predict([[1.0, 0.0]]).tolist() == ["alpha"]


# ---------------------------------------------------------------------------------------
# kNN


def ref_knn_proba(Xtr, ytr, Xte, k, metric, weights, temperature, classes):
    s, idx = ref_topk(Xte, Xtr, k, metric)
    if weights == "uniform":
        w = np.ones_like(s)
    elif weights == "softmax":
        z = (-s if metric == "euclidean" else s) / temperature
        w = np.exp(z - z.max(1, keepdims=True))
    else:
        dist = np.sqrt(s) if metric == "euclidean" else 1 - s
        w = 1 / dist
    p = np.zeros((len(Xte), len(classes)))
    for r in range(len(Xte)):
        for j in range(k):
            p[r, np.searchsorted(classes, ytr[idx[r, j]])] += w[r, j]
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_equals_sklearn_brute(digits, metric):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = digits
    Xtr, ytr, Xte = X[::2], y[::2], X[1::2]
    for weights in ("uniform", "distance"):
        ours = KNNClassifier(n_neighbors=7, metric=metric, weights=weights).fit(Xtr, ytr)
        ref = KNeighborsClassifier(7, algorithm="brute", metric=metric, weights=weights).fit(Xtr, ytr)
        # digits are small integers: exact distance ties at the k-th neighbour happen, and
        # scikit-learn breaks them arbitrarily; compare on the rows without such a tie.
        srt = np.sort(ref_scores(Xte, Xtr, metric), axis=1)
        if metric == "cosine":
            srt = -srt[:, ::-1]
        ok = ~np.isclose(srt[:, 6], srt[:, 7], rtol=1e-9, atol=1e-12)
        assert ok.mean() > 0.95
        p = ours.predict_proba(Xte)
        np.testing.assert_allclose(p[ok], ref.predict_proba(Xte)[ok], atol=1e-4)
        np.testing.assert_array_equal(ours.predict(Xte)[ok], ref.predict(Xte)[ok])
        want = ref_knn_proba(Xtr, ytr, Xte, 7, metric, weights, 1.0, ours.classes_)
        np.testing.assert_allclose(p, want, atol=1e-4)


@pytest.mark.parametrize("weights", ["uniform", "distance", "softmax"])
def test_knn_proba_equals_numpy_reference(rng, weights):
    Xtr = rng.standard_normal((600, 20), dtype=np.float32)
    ytr = rng.integers(0, 5, 600) * 10
    Xte = rng.standard_normal((50, 20), dtype=np.float32)
    for metric in ("cosine", "euclidean"):
        clf = KNNClassifier(n_neighbors=9, metric=metric, weights=weights, temperature=0.1).fit(Xtr, ytr)
        want = ref_knn_proba(Xtr, ytr, Xte, 9, metric, weights, 0.1, np.unique(ytr))
        np.testing.assert_allclose(clf.predict_proba(Xte), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(clf.predict(Xte), np.unique(ytr)[want.argmax(1)])


def test_knn_vote_ties_go_to_smallest_label():
    X = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]], dtype=np.float32)
    clf = KNNClassifier(n_neighbors=4, metric="euclidean").fit(X, [5, 5, 2, 2])
    assert clf.predict([[0.5, 0.5]]).tolist() == [2]


def test_knn_partial_fit_equals_fit_and_new_classes(rng):
    X = rng.standard_normal((300, 8), dtype=np.float32)
    y = np.repeat(["c", "a", "b"], 100)
    full = KNNClassifier(n_neighbors=5).fit(X, y)
    part = KNNClassifier(n_neighbors=5)
    for sl in (slice(0, 100), slice(100, 150), slice(150, 300)):
        part.partial_fit(X[sl], y[sl])
    q = rng.standard_normal((40, 8), dtype=np.float32)
    np.testing.assert_array_equal(part.predict(q), full.predict(q))
    np.testing.assert_array_equal(part.predict_proba(q), full.predict_proba(q))
    assert part.classes_.tolist() == ["a", "b", "c"] and part.n_samples_fit_ == 300
    s, i = part.kneighbors(q, n_neighbors=3)
    np.testing.assert_array_equal(i, topk(q, X, 3, metric="cosine")[1])


def test_knn_distance_weights_zero_distance():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.1]], dtype=np.float32)
    clf = KNNClassifier(n_neighbors=3, metric="euclidean", weights="distance").fit(X, [0, 1, 1])
    np.testing.assert_array_equal(clf.predict_proba([[0.0, 1.0]]), [[1.0, 0.0]])


def test_interpolate():
    p = interpolate([[0.5, 0.5]], [[0.0, 1.0]], 0.25)
    np.testing.assert_allclose(p, [[0.375, 0.625]])
    with pytest.raises(InvalidInputError):
        interpolate([[0.5, 0.5]], [[1.0]], 0.5)
    with pytest.raises(InvalidInputError):
        interpolate([[0.5, 0.5]], [[1.0, 0.0]], 1.5)


# ---------------------------------------------------------------------------------------
# bad input for the estimators


@pytest.mark.parametrize("cls", [NearestMeanClassifier, KNNClassifier])
def test_estimator_bad_input(cls, rng):
    X = rng.standard_normal((20, 4), dtype=np.float32)
    y = np.arange(20) % 3
    with pytest.raises(InvalidInputError, match="not fitted"):
        cls().predict(X)
    with pytest.raises(InvalidInputError, match="two classes"):
        cls().fit(X, np.zeros(20))
    with pytest.raises(InvalidInputError, match="mixes"):
        cls().fit(X[:3], [1, "a", 2])
    with pytest.raises(InvalidInputError, match="labels"):
        cls().fit(X, y[:5])
    with pytest.raises(InvalidInputError, match="empty"):
        cls().fit(X[:0], y[:0])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="contains NaN"):
        cls().fit(Xn, y)
    clf = cls().fit(X, y) if cls is NearestMeanClassifier else cls(n_neighbors=3).fit(X, y)
    with pytest.raises(InvalidInputError, match="features"):
        clf.predict(X[:, :3])
    with pytest.raises(InvalidInputError, match="contains NaN"):
        clf.predict(Xn)
    with pytest.raises(InvalidInputError, match="mixed types"):
        clf.partial_fit(X[:2], ["a", "b"])
    with pytest.raises(InvalidInputError, match="metric"):
        cls(metric="manhattan").fit(X, y)


def test_cosine_zero_rows_have_similarity_zero_as_in_sklearn(rng):
    # topk and the classifiers follow scikit-learn's cosine_similarity: an all-zero
    # query, key, sample or class mean has similarity 0 to everything
    from sklearn.metrics.pairwise import cosine_similarity
    from sklearn.neighbors import KNeighborsClassifier

    X = rng.standard_normal((30, 4), dtype=np.float32)
    X[[3, 17, 18]] = 0
    y = np.arange(30) % 3
    Q = rng.standard_normal((12, 4), dtype=np.float32)
    Q[[0, 5]] = 0
    S = cosine_similarity(Q.astype(np.float64), X.astype(np.float64))
    want = np.lexsort((np.broadcast_to(np.arange(30), S.shape), -S), axis=-1)[:, :6]
    s, i = topk(Q, X, 6, metric="cosine")
    assert np.array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(S, want, 1), atol=1e-6)
    s, i = topk(X, Q, 12, metric="cosine")  # zero keys too, every one ranked
    want_t = np.lexsort((np.broadcast_to(np.arange(12), S.T.shape), -S.T), axis=-1)
    assert np.array_equal(i, want_t)
    np.testing.assert_allclose(s, np.take_along_axis(S.T, want_t, 1), atol=1e-6)
    knn = KNNClassifier(n_neighbors=6).fit(X, y)
    d, i = knn.kneighbors(Q)
    assert np.array_equal(i, want)
    assert i[0].tolist() == list(range(6))  # all similarities 0: lower index first
    np.testing.assert_allclose(d, 1 - np.take_along_axis(S, want, 1), atol=1e-6)
    parts = KNNClassifier(n_neighbors=6).partial_fit(X[:10], y[:10]).partial_fit(X[10:], y[10:])
    assert np.array_equal(parts.kneighbors(Q)[1], i)
    nonzero = np.flatnonzero(Q.any(axis=1))
    for weights in ("uniform", "distance"):
        ref = KNeighborsClassifier(6, metric="cosine", algorithm="brute", weights=weights)
        ours = KNNClassifier(n_neighbors=6, weights=weights).fit(X, y)
        assert np.array_equal(ours.predict(Q[nonzero]), ref.fit(X, y).predict(Q[nonzero]))
        assert np.isfinite(ours.predict_proba(Q)).all()

    nmc = NearestMeanClassifier(metric="cosine").fit(X, y)
    Sm = cosine_similarity(Q.astype(np.float64), nmc.means_)
    np.testing.assert_allclose(nmc.decision_function(Q), Sm, atol=1e-6)
    assert np.array_equal(nmc.predict(Q), nmc.classes_[Sm.argmax(axis=1)])
    # class 0's mean is zero: similarity 0 to every row, ties to the first class
    sym = np.array([[1, 0], [-1, 0], [0, 1], [0, 2], [1, 1]], dtype=np.float32)
    nmc = NearestMeanClassifier(metric="cosine").fit(sym, ["a", "a", "b", "b", "c"])
    assert nmc.means_[0].tolist() == [0.0, 0.0]
    Q2 = np.array([[0, -1], [1, -5], [0, 0], [1, 0], [-1, 0.1]], dtype=np.float32)
    Sm = cosine_similarity(Q2, nmc.means_)
    assert nmc.predict(Q2).tolist() == nmc.classes_[Sm.argmax(axis=1)].tolist()
    assert nmc.predict(Q2).tolist() == ["a", "a", "a", "c", "b"]
    np.testing.assert_allclose(nmc.decision_function(Q2), Sm, atol=1e-6)


def test_knn_k_larger_than_stored(rng):
    X = rng.standard_normal((5, 3), dtype=np.float32)
    knn = KNNClassifier(n_neighbors=6).fit(X, [0, 1, 0, 1, 0])
    with pytest.raises(InvalidInputError, match="number of stored samples"):
        knn.predict(X)
    with pytest.raises(InvalidInputError, match="distance"):
        KNNClassifier(n_neighbors=2, metric="dot", weights="distance").fit(X, [0, 1, 0, 1, 0])


def test_nmc_memmap_and_partial_fit_chunks(rng, tmp_path):
    X = rng.standard_normal((5000, 16), dtype=np.float32)
    y = rng.integers(0, 4, 5000)
    path = tmp_path / "X.f32"
    X.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    clf = NearestMeanClassifier()
    for start in range(0, 5000, 1000):
        clf.partial_fit(mm[start : start + 1000], y[start : start + 1000])
    ref = NearestMeanClassifier().fit(X, y)
    np.testing.assert_array_equal(clf.means_, ref.means_)
    np.testing.assert_array_equal(clf.predict(mm), ref.predict(X))


def test_estimator_params_roundtrip():
    knn = KNNClassifier(3, metric="euclidean", weights="softmax", temperature=0.5)
    assert knn.get_params() == {"n_neighbors": 3, "metric": "euclidean", "weights": "softmax",
                                "temperature": 0.5, "progress": None}
    assert "n_neighbors=3" in repr(knn)
    assert NearestMeanClassifier().set_params(metric="cosine").metric == "cosine"
