"""thrifty.cluster.KMeans against scikit-learn and a numpy Lloyd reference."""

from __future__ import annotations

import numpy as np
import pytest

import thrifty
from thrifty.cluster import KMeans

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def _blobs(n=3000, d=16, k=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    lab = rng.integers(0, k, n)
    return (centres[lab] + rng.normal(size=(n, d))).astype(np.float32)


def _lloyd(x, c, iters):
    """Obviously-correct numpy Lloyd iterations from given centroids."""
    c = c.astype(np.float64)
    x64 = x.astype(np.float64)
    for _ in range(iters):
        d = ((x64[:, None, :] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        c = np.stack([x64[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(len(c))])
    d = ((x64[:, None, :] - c[None]) ** 2).sum(-1)
    return c, d.argmin(1), d.min(1).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inertia_within_one_percent_of_sklearn(seed):
    x = _blobs(seed=seed)
    ours = KMeans(12, seed=seed).fit(x)
    ref = sklearn_cluster.KMeans(12, n_init=1, random_state=seed).fit(x)
    assert ours.inertia_ <= ref.inertia_ * 1.01
    # inertia_ is the actual sum of squared distances to the returned centroids
    d = ((x[:, None, :].astype(np.float64) - ours.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_allclose(ours.inertia_, d.min(1).sum(), rtol=1e-6)
    np.testing.assert_array_equal(ours.labels_, d.argmin(1))


def test_same_init_as_sklearn_same_inertia():
    x = _blobs(n=2000, d=12, k=8, seed=9)
    init = x[::250][:8].copy()
    ours = KMeans(8, init=init, max_iter=300, tol=0.0).fit(x)
    ref = sklearn_cluster.KMeans(8, init=init, n_init=1, max_iter=300, tol=0.0).fit(x)
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-4)


def test_random_init_runs():
    x = _blobs(n=500, d=4, k=3, seed=2)
    km = KMeans(3, init="random", seed=4).fit(x)
    assert km.labels_.shape == (500,) and set(km.labels_.tolist()) == {0, 1, 2}


def test_given_init_matches_numpy_lloyd():
    x = _blobs(n=600, d=8, k=5, seed=3)
    init = x[:5].copy()
    km = KMeans(5, init=init, max_iter=7, tol=0.0).fit(x)
    c, lab, inertia = _lloyd(x, init, km.n_iter_)
    np.testing.assert_allclose(km.cluster_centers_, c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(km.labels_, lab)
    np.testing.assert_allclose(km.inertia_, inertia, rtol=1e-6)


def test_spherical_unit_centroids_and_cosine_assignment():
    x = _blobs(n=800, d=10, k=6, seed=4)
    km = KMeans(6, spherical=True, seed=0).fit(x)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1, atol=1e-6)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(km.labels_, (xn @ km.cluster_centers_.T).argmax(1))
    np.testing.assert_array_equal(km.predict(x), km.labels_)


def test_subsampling_deterministic_and_thread_independent():
    x = _blobs(n=4000, d=8, k=10, seed=5)
    a = KMeans(10, max_points_per_centroid=50, seed=7, spherical=True).fit(x)
    try:
        thrifty.set_num_threads(1)
        b = KMeans(10, max_points_per_centroid=50, seed=7, spherical=True).fit(x)
    finally:
        thrifty.set_num_threads(None)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_
    c = KMeans(10, max_points_per_centroid=50, seed=8, spherical=True).fit(x)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_progress_reports():
    seen = []
    km = KMeans(3, max_iter=5, tol=0.0, progress=lambda d, t: seen.append((d, t)))
    km.fit(_blobs(n=200, d=4, k=3))
    # init + n_iter_ iterations + final assignment, out of init + max_iter + final
    assert seen[-1] == (km.n_iter_ + 2, 7)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


@pytest.mark.parametrize("kwargs, X, match", [
    ({"n_clusters": 5}, np.zeros((3, 2), np.float32), "larger than the number of points"),
    ({"n_clusters": 0}, np.ones((3, 2), np.float32), "n_clusters"),
    ({"n_clusters": 2}, np.array([[np.nan, 1], [1, 1]], np.float32), "NaN"),
    ({"n_clusters": 2, "init": "bogus"}, np.ones((3, 2), np.float32), "init"),
    ({"n_clusters": 2, "init": np.ones((3, 2))}, np.ones((3, 2), np.float32), "init has 3 rows"),
    ({"n_clusters": 2, "spherical": True}, np.zeros((3, 2), np.float32), "zero"),
    ({"n_clusters": 2}, np.ones((3, 2), bool), "boolean"),
    ({"n_clusters": 2, "spherical": "yes"}, np.ones((3, 2), np.float32), "spherical must be True or False"),
    ({"n_clusters": 2}, np.ones((3, 1), np.complex64), "Complex data not supported"),
])
def test_bad_input(kwargs, X, match):
    with pytest.raises(thrifty.InvalidInputError, match=match):
        KMeans(**kwargs).fit(X)


def test_predict_before_fit():
    with pytest.raises(thrifty.InvalidInputError, match="not fitted"):
        KMeans(2).predict(np.ones((2, 2), np.float32))


def test_spherical_inertia_within_one_percent_of_faiss():
    faiss = pytest.importorskip("faiss")
    x = _blobs(n=4000, d=16, k=20, seed=11)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ours = KMeans(20, spherical=True, seed=0).fit(x)
    km = faiss.Kmeans(16, 20, niter=100, spherical=True, seed=1234)
    km.train(np.ascontiguousarray(xn))
    ref = ((xn[:, None, :].astype(np.float64) - km.centroids[None]) ** 2).sum(-1).min(1).sum()
    assert ours.inertia_ <= ref * 1.01


def test_kmeans_follows_the_scikit_learn_parameter_protocol():
    from sklearn.base import clone

    from thrifty import InvalidInputError
    from thrifty.cluster import KMeans

    km = KMeans(4, spherical=True, seed=3)
    assert km.get_params()["n_clusters"] == 4 and km.get_params()["spherical"] is True
    c = clone(km)
    assert c is not km and c.get_params() == km.get_params()
    assert km.set_params(max_iter=7) is km and km.max_iter == 7
    assert repr(km).startswith("KMeans(") and "n_clusters=4" in repr(km)
    assert "spherical=True" in repr(km)
    with pytest.raises(InvalidInputError, match="unknown parameter"):
        km.set_params(bogus=1)
