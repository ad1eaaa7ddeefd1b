"""Real data: Fashion-MNIST (Debian package dataset-fashion-mnist) in 5 class-incremental
tasks of 2 classes, with NMC and kNN, the accuracy matrix and forgetting."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from thrifty.continual import AccuracyMatrix, class_incremental_split
from thrifty.neighbors import KNNClassifier, NearestMeanClassifier

ROOT = Path("/usr/share/datasets/fashion-mnist")


def load(kind):
    with gzip.open(ROOT / f"{kind}-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(ROOT / f"{kind}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return (X / np.float32(255)).astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def fashion():
    if not (ROOT / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    Xtr, ytr = load("train")
    Xte, yte = load("t10k")
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    return Xtr, ytr, Xte, yte


def run_tasks(clf, Xtr, ytr, Xte, yte, n_tasks=5, seed=0):
    train_tasks = class_incremental_split(ytr, n_tasks, seed=seed)
    order = np.random.default_rng(seed).permutation(np.unique(ytr))
    test_tasks = class_incremental_split(yte, n_tasks, class_order=order)
    R = AccuracyMatrix(n_tasks)
    for t, idx in enumerate(train_tasks):
        clf.partial_fit(Xtr[idx], ytr[idx])
        for j in range(t + 1):
            sel = test_tasks[j]
            R.record(t, j, clf.score(Xte[sel], yte[sel]))
    return R


def test_nmc_full_fashion_mnist_class_incremental(fashion):
    Xtr, ytr, Xte, yte = fashion
    nmc = NearestMeanClassifier()
    R = run_tasks(nmc, Xtr, ytr, Xte, yte)
    # After the first task (2 classes) NMC is nearly perfect; raw-pixel NMC on all 10
    # classes is ~67.7% in the literature/spec.
    assert np.diag(R.R).min() > 0.65  # each new task on its own
    final = nmc.score(Xte, yte)
    assert 0.65 < final < 0.70
    assert R.forgetting() > 0  # new classes' means take old samples
    # streaming through the tasks == one fit on everything (task-free NMC)
    one = NearestMeanClassifier().fit(Xtr, ytr)
    np.testing.assert_allclose(nmc.means_, one.means_, rtol=1e-12)
    np.testing.assert_array_equal(nmc.predict(Xte), one.predict(Xte))


def test_nmc_equals_sklearn_on_fashion_mnist(fashion):
    from sklearn.neighbors import NearestCentroid

    Xtr, ytr, Xte, _ = fashion
    ours = NearestMeanClassifier().fit(Xtr, ytr).predict(Xte)
    ref = NearestCentroid().fit(Xtr, ytr).predict(Xte)
    np.testing.assert_array_equal(ours, ref)


def test_knn_fashion_mnist_subset_class_incremental(fashion):
    Xtr, ytr, Xte, yte = fashion
    # a subset keeps the test fast: 800 train / 200 test images per class
    rng = np.random.default_rng(0)
    tr = np.concatenate([rng.choice(np.flatnonzero(ytr == c), 800, replace=False) for c in range(10)])
    te = np.concatenate([rng.choice(np.flatnonzero(yte == c), 200, replace=False) for c in range(10)])
    tr.sort()
    te.sort()
    knn = KNNClassifier(n_neighbors=10, metric="cosine", weights="softmax")
    R = run_tasks(knn, Xtr[tr], ytr[tr], Xte[te], yte[te])
    assert np.diag(R.R).min() > 0.7
    assert R.average_accuracy() > 0.75  # kNN beats NMC (~0.68) on raw pixels
    assert np.isfinite(R.backward_transfer())
