"""thrifty.continual against hand-computed examples."""

import numpy as np
import pytest

from thrifty import InvalidInputError
from thrifty.continual import AccuracyMatrix, class_incremental_split


def test_split_partitions_classes_in_seeded_order():
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 0])
    tasks = class_incremental_split(y, 5, seed=7)
    order = np.random.default_rng(7).permutation(np.unique(y))
    groups = np.array_split(order, 5)
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2]
    for t, g in zip(tasks, groups):
        np.testing.assert_array_equal(t, [i for i in range(len(y)) if y[i] in set(g)])
        assert t.dtype == np.int64
    allidx = np.concatenate(tasks)
    assert sorted(allidx.tolist()) == list(range(len(y)))
    # deterministic and seed-dependent
    assert all(np.array_equal(a, b) for a, b in zip(tasks, class_incremental_split(y, 5, seed=7)))
    assert not all(np.array_equal(a, b) for a, b in zip(tasks, class_incremental_split(y, 5, seed=8)))


def test_split_with_class_order_and_uneven_groups():
    y = ["b", "a", "c", "a", "b"]
    tasks = class_incremental_split(y, 2, class_order=["c", "a", "b"])
    assert [t.tolist() for t in tasks] == [[1, 2, 3], [0, 4]]  # groups [c, a], [b]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y=[0, 1], n_tasks=3), "exceeds"),
        (dict(y=[0, 1], n_tasks=0), "n_tasks"),
        (dict(y=[], n_tasks=1), "non-empty"),
        (dict(y=[0, 1, 2], n_tasks=1, class_order=[0, 1]), "class_order"),
        (dict(y=[0, 1, 2], n_tasks=1, class_order=[0, 1, 1]), "class_order"),
    ],
)
def test_split_bad_input(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        class_incremental_split(**kwargs)


def filled():
    # R[i, j]: rows = after task i, columns = on task j
    R = [[0.9, 0.0, 0.0], [0.7, 0.8, 0.0], [0.5, 0.6, 0.95]]
    m = AccuracyMatrix(3)
    for i in range(3):
        for j in range(3):
            m.record(i, j, R[i][j])
    return m


def test_accuracy_matrix_metrics_by_hand():
    m = filled()
    assert m.average_accuracy() == pytest.approx((0.5 + 0.6 + 0.95) / 3)
    a0, a1, a2 = 0.9, (0.7 + 0.8) / 2, (0.5 + 0.6 + 0.95) / 3
    assert m.average_incremental_accuracy() == pytest.approx((a0 + a1 + a2) / 3)
    # f_0 = max(0.9, 0.7) - 0.5 = 0.4; f_1 = 0.8 - 0.6 = 0.2
    assert m.forgetting() == pytest.approx(0.3)
    # BWT = ((0.5 - 0.9) + (0.6 - 0.8)) / 2
    assert m.backward_transfer() == pytest.approx(-0.3)
    assert m.average_accuracy(after_task=1) == pytest.approx(0.75)
    assert m.forgetting(after_task=1) == pytest.approx(0.2)
    assert m.forgetting(after_task=0) == 0.0 and m.backward_transfer(after_task=0) == 0.0


def test_worst_case_metrics_by_hand():
    m = filled()
    # per-iteration evaluations reveal a stability gap on task 0 while task 1 trains
    m.record_step(10, 0, 0.9, training_task=0)  # before task 0 was learned: ignored
    m.record_step(110, 0, 0.3, training_task=1)
    m.record_step(120, 0, 0.6, training_task=1)
    m.record_step(210, 1, 0.4, training_task=2)
    m.record_step(210, 0, 0.45, training_task=2)
    assert m.min_acc(0) == pytest.approx(0.3)
    assert m.min_acc(1) == pytest.approx(0.4)
    assert m.min_acc(0, until_task=1) == pytest.approx(0.3)
    # WC-ACC after 3 tasks: (1/3) * 0.95 + (2/3) * mean(0.3, 0.4)
    assert m.wc_acc() == pytest.approx(0.95 / 3 + 2 / 3 * 0.35)
    # after 2 tasks: (1/2) * 0.8 + (1/2) * 0.3
    assert m.wc_acc(1) == pytest.approx(0.55)
    assert m.wc_acc(0) == pytest.approx(0.9)


def test_accuracy_matrix_bad_input():
    m = AccuracyMatrix(2)
    with pytest.raises(InvalidInputError, match="not recorded"):
        m.average_accuracy()
    with pytest.raises(InvalidInputError, match="after_task"):
        m.record(2, 0, 0.5)
    with pytest.raises(InvalidInputError, match="accuracy"):
        m.record(0, 0, 1.5)
    with pytest.raises(InvalidInputError, match="accuracy"):
        m.record(0, 0, float("nan"))
    with pytest.raises(InvalidInputError, match="no evaluation"):
        m.min_acc(0)
    with pytest.raises(InvalidInputError):
        AccuracyMatrix(0)
