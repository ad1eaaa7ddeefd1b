"""What thrifty's scikit-learn estimators share (imported only by the estimator modules).

The estimators inherit :class:`sklearn.base.BaseEstimator` (parameter names come from
the ``__init__`` signature, so ``get_params``, ``set_params``, ``clone``, ``repr`` and
grid searches work) and :class:`~sklearn.base.ClassifierMixin` or
:class:`~sklearn.base.ClusterMixin`. Input validation stays thrifty's: every error is a
:class:`thrifty.InvalidInputError` (a ``ValueError``, which scikit-learn expects), and
calling a method before ``fit`` raises :class:`NotFittedError`, which is both a
``thrifty.InvalidInputError`` and scikit-learn's ``NotFittedError``.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import DataConversionWarning
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

from ._errors import InvalidInputError
from ._validation import as_float_matrix

__all__ = ["Estimator", "NotFittedError", "check_fitted", "validate_X", "as_labels", "drop_self"]


class NotFittedError(InvalidInputError, _SklearnNotFittedError):
    """A method that needs a fitted estimator was called before ``fit``."""


class Estimator(BaseEstimator):
    """:class:`sklearn.base.BaseEstimator` whose ``set_params`` raises thrifty's error."""

    def set_params(self, **params: Any) -> Any:
        """Set constructor parameters (scikit-learn protocol); returns self."""
        try:
            return super().set_params(**params)
        except ValueError as e:
            if isinstance(e, InvalidInputError):
                raise
            raise InvalidInputError(f"unknown parameter for {type(self).__name__}: {e}") from None


def check_fitted(est: Any, attr: str) -> None:
    """Raise :class:`NotFittedError` unless ``est`` has the fitted attribute ``attr``."""
    if not hasattr(est, attr):
        raise NotFittedError(
            f"this {type(est).__name__} instance is not fitted yet; call fit first"
        )


def validate_X(est: Any, X: Any, *, reset: bool, finite: bool = True) -> np.ndarray:
    """``X`` as C-contiguous float32 (integers converted), checked against
    ``n_features_in_`` unless ``reset`` (fit), which sets it."""
    x = as_float_matrix(X, "X", finite=finite, convert=True)
    if reset:
        est.n_features_in_ = int(x.shape[1])
    elif x.shape[1] != est.n_features_in_:
        raise InvalidInputError(
            f"X has {x.shape[1]} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input"
        )
    return x


def _label_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (numbers.Integral, np.integer)):
        return "int"
    if isinstance(v, (numbers.Real, np.floating)):
        return "float"
    if isinstance(v, (str, np.str_)):
        return "str"
    if isinstance(v, (bytes, np.bytes_)):
        return "bytes"
    return type(v).__name__


def as_labels(y: Any, n: int) -> np.ndarray:
    """Class labels as a 1-D array of one kind (numbers or strings), ``n`` long.

    A column vector of shape (n, 1) is flattened with a ``DataConversionWarning`` (as
    scikit-learn does); float labels that are not whole numbers are rejected as
    continuous ("Unknown label type"), as are NaN/inf.
    """
    if y is None:
        raise InvalidInputError(
            "this estimator requires y to be passed, but the target y is None; "
            "expected one label per row of X"
        )
    if isinstance(y, np.ndarray) and y.dtype != object:
        arr = y
    else:
        arr0 = np.asarray(y, dtype=object)
        seq = list(arr0.ravel())
        kinds = {_label_kind(v) for v in seq}
        if {"int", "float"} >= kinds and kinds:
            kinds = {"number"}
        if len(kinds) > 1:
            raise InvalidInputError(
                f"y mixes labels of different types ({', '.join(sorted(kinds))}); use one type"
            )
        arr = np.asarray(seq).reshape(arr0.shape)
        if arr.dtype == object:
            raise InvalidInputError("y must hold numbers or strings")
    if arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change "
            "the shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        arr = arr.ravel()
    if arr.ndim != 1:
        raise InvalidInputError(f"y must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biufUS":
        raise InvalidInputError(f"y must hold numbers or strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidInputError("y contains NaN or inf; labels must be finite")
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise InvalidInputError(
                "Unknown label type: continuous. y holds non-integer floats; a classifier "
                "needs class labels (integers or strings), not regression targets"
            )
    if arr.shape[0] != n:
        raise InvalidInputError(f"y has {arr.shape[0]} labels but X has {n} rows")
    return arr


def drop_self(dist: np.ndarray, ind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of the training samples themselves (``kneighbors(X=None)``): from
    ``n_neighbors + 1`` per row, drop the sample's own index (or, when duplicates pushed
    it out, the farthest), as scikit-learn does."""
    n, width = ind.shape
    own = ind == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    return dist[keep].reshape(n, width - 1), ind[keep].reshape(n, width - 1)
