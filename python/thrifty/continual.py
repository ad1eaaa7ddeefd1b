"""Continual-learning evaluation: class-incremental splits and accuracy matrices.

* :func:`class_incremental_split` partitions the classes into disjoint groups (in a
  seeded random order, or one you give) and returns the sample indices of each task.
* :class:`AccuracyMatrix` holds ``R[i, j]`` = accuracy on task ``j`` after training
  through task ``i`` and computes the standard metrics — average accuracy, average
  incremental accuracy, forgetting, backward transfer — plus the per-iteration
  worst-case metrics (min-ACC, WC-ACC) of "Continual evaluation for lifelong learning:
  identifying the stability gap".

Tasks are numbered from 0. Accuracies are fractions in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import InvalidInputError
from ._validation import check_float, check_int

__all__ = ["class_incremental_split", "AccuracyMatrix"]


def class_incremental_split(
    y: Any,
    n_tasks: int,
    *,
    seed: int = 0,
    class_order: Any = None,
) -> list[np.ndarray]:
    """Split samples into class-incremental tasks.

    The distinct classes of ``y`` are put in ``class_order`` (default: a permutation
    drawn with ``numpy.random.default_rng(seed)``) and cut into ``n_tasks`` consecutive
    groups of equal size (when the number of classes is not a multiple of ``n_tasks``,
    the first groups get one class more). Task ``t`` holds every sample whose class is
    in group ``t``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
    n_tasks : int
        Between 1 and the number of classes.
    seed : int
        Seed of the class permutation (ignored when ``class_order`` is given).
    class_order : array-like, optional
        Every class of ``y`` exactly once.

    Returns
    -------
    list of ndarray of int64
        Sorted sample indices of each task.

    Examples
    --------
    >>> from thrifty.continual import class_incremental_split
    >>> y = [0, 1, 2, 3, 0, 1, 2, 3]
    >>> [t.tolist() for t in class_incremental_split(y, 2, class_order=[3, 0, 1, 2])]
    [[0, 3, 4, 7], [1, 2, 5, 6]]
    """
    yy = np.asarray(y)
    if yy.ndim != 1 or yy.shape[0] == 0:
        raise InvalidInputError(f"y must be a non-empty 1-D array of labels, got shape {yy.shape}")
    classes = np.unique(yy)
    n_tasks = check_int(n_tasks, "n_tasks", low=1)
    if n_tasks > classes.shape[0]:
        raise InvalidInputError(
            f"n_tasks ({n_tasks}) exceeds the number of classes ({classes.shape[0]})"
        )
    if class_order is None:
        order = np.random.default_rng(check_int(seed, "seed", low=0)).permutation(classes)
    else:
        order = np.asarray(class_order)
        if order.ndim != 1 or order.shape[0] != classes.shape[0] or not np.array_equal(
            np.sort(order), classes
        ):
            raise InvalidInputError("class_order must list every class of y exactly once")
    return [np.flatnonzero(np.isin(yy, g)).astype(np.int64) for g in np.array_split(order, n_tasks)]


class AccuracyMatrix:
    """Accuracy of every task after every task: ``R[i, j]``, plus per-step records.

    Parameters
    ----------
    n_tasks : int

    Examples
    --------
    >>> from thrifty.continual import AccuracyMatrix
    >>> R = AccuracyMatrix(2)
    >>> R.record(0, 0, 0.9)
    >>> R.record(1, 0, 0.6); R.record(1, 1, 0.8)
    >>> round(R.average_accuracy(), 3), round(R.average_incremental_accuracy(), 3)
    (0.7, 0.8)
    >>> round(R.forgetting(), 3), round(R.backward_transfer(), 3)
    (0.3, -0.3)
    """

    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = check_int(n_tasks, "n_tasks", low=1)
        self.R = np.full((self.n_tasks, self.n_tasks), np.nan)
        self.steps: list[tuple[int, int, float, int]] = []

    def _task(self, t: Any, name: str) -> int:
        return check_int(t, name, low=0, high=self.n_tasks - 1)

    def record(self, after_task: int, on_task: int, accuracy: float) -> None:
        """Set ``R[after_task, on_task]``."""
        i, j = self._task(after_task, "after_task"), self._task(on_task, "on_task")
        self.R[i, j] = check_float(accuracy, "accuracy", low=0.0, high=1.0)

    def _get(self, i: int, j: int) -> float:
        v = self.R[i, j]
        if np.isnan(v):
            raise InvalidInputError(f"R[{i}, {j}] (task {j} after task {i}) was not recorded")
        return float(v)

    def _last(self, after_task: int | None) -> int:
        return self.n_tasks - 1 if after_task is None else self._task(after_task, "after_task")

    def average_accuracy(self, after_task: int | None = None) -> float:
        """``A_T = mean_{j <= T} R[T, j]`` (``T``: the last task by default)."""
        t = self._last(after_task)
        return float(np.mean([self._get(t, j) for j in range(t + 1)]))

    def average_incremental_accuracy(self, after_task: int | None = None) -> float:
        """Mean over ``i <= T`` of ``A_i``."""
        t = self._last(after_task)
        return float(np.mean([self.average_accuracy(i) for i in range(t + 1)]))

    def forgetting(self, after_task: int | None = None) -> float:
        """Mean over ``j < T`` of ``max_{j <= i < T} R[i, j] - R[T, j]`` (0 for one task)."""
        t = self._last(after_task)
        if t == 0:
            return 0.0
        f = [max(self._get(i, j) for i in range(j, t)) - self._get(t, j) for j in range(t)]
        return float(np.mean(f))

    def backward_transfer(self, after_task: int | None = None) -> float:
        """``BWT = mean_{j < T} (R[T, j] - R[j, j])`` (0 for one task)."""
        t = self._last(after_task)
        if t == 0:
            return 0.0
        return float(np.mean([self._get(t, j) - self._get(j, j) for j in range(t)]))

    def record_step(self, step: int, on_task: int, accuracy: float, *, training_task: int) -> None:
        """Record an evaluation on ``on_task`` at training iteration ``step``, taken
        while ``training_task`` was being trained (per-iteration continual evaluation)."""
        self.steps.append(
            (
                check_int(step, "step", low=0),
                self._task(on_task, "on_task"),
                check_float(accuracy, "accuracy", low=0.0, high=1.0),
                self._task(training_task, "training_task"),
            )
        )

    def min_acc(self, task: int, *, until_task: int | None = None) -> float:
        """Minimum accuracy on ``task`` over every evaluation after it was learned (up to
        the end of ``until_task``, default: all): the per-step records taken while a
        later task trained, and ``R[i, task]`` for ``i > task``."""
        j = self._task(task, "task")
        u = self._last(until_task)
        vals = [a for (_, on, a, tr) in self.steps if on == j and j < tr <= u]
        vals += [float(v) for v in self.R[j + 1 : u + 1, j] if not np.isnan(v)]
        if not vals:
            raise InvalidInputError(f"no evaluation of task {j} after it was learned was recorded")
        return float(min(vals))

    def wc_acc(self, task: int | None = None) -> float:
        """Worst-case accuracy after learning ``task`` (the last by default):
        ``(1/k) a_k + (1 - 1/k) mean_{j < task} min_acc(j)`` with ``k = task + 1`` tasks
        seen and ``a_k = R[task, task]``."""
        t = self._last(task)
        k = t + 1
        a = self._get(t, t)
        if k == 1:
            return a
        return float(a / k + (1 - 1 / k) * np.mean([self.min_acc(j, until_task=t) for j in range(t)]))

    def __repr__(self) -> str:
        return f"AccuracyMatrix(n_tasks={self.n_tasks})\n{np.array2string(self.R, precision=3)}"
