"""thrifty's estimators under scikit-learn's own estimator checks and tools."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")  # estimator tags

from sklearn.base import clone, is_classifier, is_clusterer
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import thrifty
from thrifty.cluster import KMeans
from thrifty.neighbors import KNNClassifier, NearestMeanClassifier

# Every check passes, for every configuration: sparse and complex input are rejected with
# the messages scikit-learn's checks look for, which counts as passing, so no check is an
# expected failure. Under metric="cosine" an all-zero row has cosine similarity 0, as in
# scikit-learn (check_estimators_dtypes casts [0, 3) data to integers: zero rows).
ESTIMATORS = [
    NearestMeanClassifier(progress=False),
    NearestMeanClassifier(metric="cosine", progress=False),
    KNNClassifier(n_neighbors=3, metric="euclidean", progress=False),
    KNNClassifier(n_neighbors=3, weights="distance", progress=False),
    KMeans(n_clusters=3, progress=False),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)


def test_kinds_and_clone():
    assert is_classifier(NearestMeanClassifier()) and is_classifier(KNNClassifier())
    assert is_clusterer(KMeans())
    knn = KNNClassifier(3, metric="euclidean", weights="softmax", temperature=0.5)
    assert knn.get_params() == {"n_neighbors": 3, "metric": "euclidean", "weights": "softmax",
                                "temperature": 0.5, "progress": None}
    assert "KNNClassifier(metric='euclidean', n_neighbors=3" in repr(knn)
    assert clone(knn).get_params() == knn.get_params()


@pytest.mark.parametrize("est", [NearestMeanClassifier(), KNNClassifier(3), KMeans(2)])
def test_not_fitted_error_is_both_sklearns_and_thriftys(est):
    X = np.ones((3, 2))
    method = est.predict
    with pytest.raises(NotFittedError) as e:
        method(X)
    assert isinstance(e.value, thrifty.InvalidInputError)


def test_column_vector_y_is_flattened_with_a_warning(rng):
    X = rng.standard_normal((30, 4))
    y = np.arange(30) % 3
    for est in (NearestMeanClassifier(), KNNClassifier(3)):
        with pytest.warns(DataConversionWarning):
            a = clone(est).fit(X, y[:, None]).predict(X)
        assert np.array_equal(a, clone(est).fit(X, y).predict(X))


def test_continuous_y_integer_x_and_sparse_x(rng):
    X = rng.standard_normal((20, 3))
    for est in (NearestMeanClassifier(), KNNClassifier(3)):
        with pytest.raises(thrifty.InvalidInputError, match="Unknown label type: continuous"):
            est.fit(X, rng.standard_normal(20))
        Xi = rng.integers(-5, 5, (20, 3))
        y = np.arange(20) % 2
        assert np.array_equal(est.fit(Xi, y).predict(Xi),
                              est.fit(Xi.astype(np.float32), y).predict(Xi.astype(np.float32)))
    sparse = pytest.importorskip("scipy.sparse")
    for est in (NearestMeanClassifier(), KNNClassifier(3), KMeans(2)):
        with pytest.raises(thrifty.InvalidInputError, match="sparse input is not supported"):
            est.fit(sparse.csr_matrix(X), np.arange(20) % 2)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_messages_name_the_value(bad, word, rng):
    X = rng.standard_normal((10, 3))
    X[4, 2] = bad
    y = np.arange(10) % 2
    for est in (NearestMeanClassifier(), KNNClassifier(3), KMeans(2)):
        with pytest.raises(thrifty.InvalidInputError, match=f"contains {word} at"):
            est.fit(X, y)


def _datasets():
    from sklearn.datasets import load_digits, load_iris, load_wine
    from sklearn.model_selection import train_test_split

    for load in (load_iris, load_wine, load_digits):
        X, y = load(return_X_y=True)
        yield load.__name__, train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_")
def test_nmc_equals_nearest_centroid_on_iris_wine_digits():
    from sklearn.neighbors import NearestCentroid

    for name, (Xtr, Xte, ytr, yte) in _datasets():
        ours = NearestMeanClassifier().fit(Xtr, ytr).predict(Xte)
        ref = NearestCentroid().fit(Xtr.astype(np.float32), ytr).predict(Xte.astype(np.float32))
        assert np.array_equal(ours, ref), name


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_equals_kneighbors_brute_on_iris_wine_digits(weights):
    from sklearn.neighbors import KNeighborsClassifier

    for name, (Xtr, Xte, ytr, yte) in _datasets():
        Xtr32, Xte32 = Xtr.astype(np.float32), Xte.astype(np.float32)
        ours = KNNClassifier(5, metric="euclidean", weights=weights).fit(Xtr, ytr)
        ref = KNeighborsClassifier(5, weights=weights, algorithm="brute").fit(Xtr32, ytr)
        # float64 squared distances of the float32 data; thrifty's float32 expansion
        # |q|^2 + |k|^2 - 2 q.k is exact up to ~1e-6 of the squared norms
        d2 = ((Xte32[:, None, :].astype(np.float64) - Xtr32[None]) ** 2).sum(-1)
        tol = 1e-6 * 8 * float((Xtr32.astype(np.float64) ** 2).sum(1).max())
        d, i = ours.kneighbors(Xte)
        np.testing.assert_allclose(d**2, np.take_along_axis(d2, i, 1), atol=tol)
        srt = np.sort(d2, axis=1)
        clear = (np.diff(srt[:, :6], axis=1) > 2 * tol).all(axis=1)  # no near-tie among 6
        assert clear.sum() >= 10, name
        # every row: a valid set of 5 nearest (exact ties may be broken either way)
        assert (np.take_along_axis(d2, i, 1).max(1) <= srt[:, 4] + tol).all(), name
        i_ref = ref.kneighbors(Xte32, return_distance=False)
        assert np.array_equal(i[clear], i_ref[clear]), name
        assert np.array_equal(ours.predict(Xte)[clear], ref.predict(Xte32)[clear]), name


def test_kneighbors_true_distances_and_without_x(rng):
    X = rng.standard_normal((40, 5)).astype(np.float32)
    X[7] = X[3]  # a duplicate
    y = np.arange(40) % 2
    knn = KNNClassifier(4, metric="euclidean").fit(X, y)
    d, i = knn.kneighbors(X[:5])
    ref = np.sqrt(((X[:5, None, :].astype(np.float64) - X[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d, np.take_along_axis(ref, i, 1), rtol=1e-5, atol=1e-5)
    assert np.array_equal(knn.kneighbors(X[:5], return_distance=False), i)
    d0, i0 = knn.kneighbors()
    from sklearn.neighbors import NearestNeighbors

    d_ref, i_ref = NearestNeighbors(n_neighbors=4, algorithm="brute").fit(X).kneighbors()
    np.testing.assert_allclose(d0, d_ref, rtol=1e-4, atol=1e-4)
    assert all(r not in i0[r] for r in range(40))
    assert 3 in i0[7] and 7 in i0[3]
    cos = KNNClassifier(2, metric="cosine").fit(X, y)
    dc, ic = cos.kneighbors(X[:3], n_neighbors=3)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(dc, 1 - np.take_along_axis(Xn[:3] @ Xn.T, ic, 1), atol=1e-5)
    with pytest.raises(thrifty.InvalidInputError, match="smaller than the number of stored"):
        knn.kneighbors(n_neighbors=40)


def test_partial_fit_with_classes(rng):
    X = rng.standard_normal((30, 3))
    y = np.arange(30) % 3
    for est in (NearestMeanClassifier(), KNNClassifier(3)):
        est.partial_fit(X[:10][y[:10] < 2], y[:10][y[:10] < 2], classes=[0, 1, 2])
        assert est.classes_.tolist() == [0, 1, 2]
        assert set(est.predict(X).tolist()) <= {0, 1}  # class 2 has no sample yet
        est.partial_fit(X[10:], y[10:])
        full = clone(est).fit(np.concatenate([X[:10][y[:10] < 2], X[10:]]),
                              np.concatenate([y[:10][y[:10] < 2], y[10:]]))
        assert np.array_equal(est.predict(X), full.predict(X))


def test_binary_decision_function_is_one_column(rng):
    X = rng.standard_normal((20, 3))
    y = np.arange(20) % 2
    nmc = NearestMeanClassifier().fit(X, y)
    dec = nmc.decision_function(X)
    assert dec.shape == (20,)
    assert np.array_equal(nmc.predict(X), nmc.classes_[(dec > 0).astype(int)])
