"""Input validation and normalisation shared by every module.

The rules, applied before any call into the Rust core:

* Floating arrays become C-contiguous ``float32``: ``float32`` input that is already
  C-contiguous and native-endian is passed through **without a copy**; ``float16`` and
  ``float64`` input (and Python lists, which numpy reads as ``float64``) is converted to
  ``float32`` once; non-contiguous input (a transposed or sliced view) is copied into a
  C-contiguous buffer once.
* Integer, boolean, complex, object and string arrays are rejected: thrifty does not
  guess how they should become floats. The estimators (scikit-learn's convention) pass
  ``convert=True``: integer and numeric object arrays then become ``float32`` too.
* Sparse matrices and arrays (``scipy.sparse``) are rejected with a message saying so.
* Wrong number of dimensions, empty arrays (unless allowed) and NaN/inf are rejected
  with an :class:`~thrifty.InvalidInputError` that names the argument and the position.
* Nothing the caller passed is modified in place.

Scalar options go through :func:`check_int`, :func:`check_float`, :func:`check_bool` and
:func:`check_choice`, all called ``check_x(value, name, ...)``. Bounds are inclusive
(``low <= value <= high``); :func:`check_float` makes a bound open with
``low_inclusive=False`` / ``high_inclusive=False``.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

from ._errors import InvalidInputError

__all__ = [
    "as_float_matrix",
    "as_float_vector",
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
]

_CONVERTIBLE = (np.float16, np.float32, np.float64)


def _describe(a: Any) -> str:
    return f"{type(a).__module__}.{type(a).__qualname__}"


def _is_sparse(x: Any) -> bool:
    return type(x).__module__.startswith("scipy.sparse")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise InvalidInputError(f"{name} is None; expected an array")
    if _is_sparse(x):
        raise InvalidInputError(
            f"{name} is a sparse {type(x).__name__}; sparse input is not supported, "
            f"pass a dense array (e.g. {name}.toarray())"
        )
    if isinstance(x, (str, bytes)):
        raise InvalidInputError(f"{name} must be a numeric array, got {type(x).__name__}")
    if not isinstance(x, np.ndarray):
        # torch CPU tensors, memoryviews, lists... (zero-copy where numpy can)
        if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
            if getattr(x, "device", None) is not None and str(x.device) != "cpu":
                raise InvalidInputError(
                    f"{name} is a torch tensor on {x.device}; move it to the CPU first"
                )
            x = x.detach()
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InvalidInputError(f"{name} could not be read as an array: {e}") from None
    return x


class _NotANumberError(InvalidInputError, TypeError):
    """An object array holds a value that is not a number (also a ``TypeError``, which
    is what numpy and scikit-learn raise there)."""


def _numeric_to_float(x: np.ndarray, name: str) -> np.ndarray:
    """Integer and numeric object arrays as float (the estimators' ``convert=True``)."""
    if x.dtype.kind in "iu":
        return x.astype(np.float32)
    if x.dtype.kind == "O":
        try:
            return x.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise _NotANumberError(
                f"{name} has object dtype with a value that is not a real number: {e}"
            ) from None
    return x


def _to_float32(x: np.ndarray, name: str) -> np.ndarray:
    dt = x.dtype
    if dt.kind == "c":
        raise InvalidInputError(
            f"{name} has complex dtype {dt}: Complex data not supported; pass real values"
        )
    if dt.kind != "f" or dt.type not in _CONVERTIBLE:
        kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex",
                "O": "object", "U": "string", "S": "bytes"}.get(dt.kind, str(dt))
        raise InvalidInputError(
            f"{name} must hold floating-point values (float16, float32 or float64), "
            f"got {kind} dtype {dt}; convert it explicitly, e.g. {name}.astype(np.float32)"
        )
    if dt != np.float32 or not dt.isnative:
        x = x.astype(np.float32)  # one deliberate conversion (documented)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x


def _check_finite(x: np.ndarray, name: str) -> None:
    if x.size and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        where = ", ".join(str(int(i)) for i in bad)
        v = x[tuple(bad)]
        what = "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        raise InvalidInputError(f"{name} contains {what} at position ({where}); "
                                "NaN and inf are not allowed")


def as_float_matrix(
    x: Any,
    name: str = "X",
    *,
    allow_empty: bool = False,
    finite: bool = True,
    n_features: int | None = None,
    one_d_hint: str = "reshape your data with x.reshape(1, -1) for a single sample",
    convert: bool = False,
) -> np.ndarray:
    """Return ``x`` as a 2-D C-contiguous float32 array, following the module rules.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
    name : str
        How error messages call the argument.
    allow_empty : bool
        Accept zero rows (never zero columns).
    finite : bool
        Reject NaN and infinity.
    n_features : int, optional
        Required number of columns (e.g. the width seen in ``fit``).
    one_d_hint : str
        Advice appended when ``x`` is 1-D. The default suits predict-style calls, where
        one sample is meaningful; a whole-data-set call passes its own.
    convert : bool
        Also accept integer and numeric object arrays (converted to float32), as
        scikit-learn's estimators do.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.ones((2, 3), dtype=np.float32)
    >>> as_float_matrix(a) is a
    True
    >>> as_float_matrix(np.ones((2, 3))).dtype
    dtype('float32')
    """
    x = _to_numpy(x, name)
    if x.ndim != 2:
        hint = f"; {one_d_hint}" if x.ndim == 1 and one_d_hint else ""
        raise InvalidInputError(
            f"{name} must be 2-D (n_samples, n_features), got {x.ndim}-D shape {x.shape}{hint}"
        )
    if convert:
        x = _numeric_to_float(x, name)
    x = _to_float32(x, name)
    if x.shape[1] == 0:
        raise InvalidInputError(
            f"{name} is empty: 0 feature(s) (shape={x.shape}) while a minimum of 1 is required."
        )
    if x.shape[0] == 0 and not allow_empty:
        raise InvalidInputError(
            f"{name} is empty: 0 sample(s) (shape={x.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and x.shape[1] != n_features:
        raise InvalidInputError(f"{name} has {x.shape[1]} features, expected {n_features}")
    if finite:
        _check_finite(x, name)
    return x


def as_float_vector(x: Any, name: str = "x", *, allow_empty: bool = False, finite: bool = True) -> np.ndarray:
    """Return ``x`` as a 1-D C-contiguous float32 array, following the module rules."""
    x = _to_numpy(x, name)
    if x.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got {x.ndim}-D shape {x.shape}")
    x = _to_float32(x, name)
    if x.shape[0] == 0 and not allow_empty:
        raise InvalidInputError(f"{name} is empty")
    if finite:
        _check_finite(x, name)
    return x


def _scalar(value: Any, name: str, what: str) -> Any:
    """``value`` unwrapped from a one-element numpy/torch array (never a str or bool)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise InvalidInputError(f"{name} must be {what}, got {value!r}")
    if hasattr(value, "shape") and hasattr(value, "item"):  # numpy / torch scalars
        if tuple(value.shape) not in ((), (1,)):
            raise InvalidInputError(
                f"{name} must be {what}, got an array of shape {tuple(value.shape)}"
            )
        value = value.item()
        if isinstance(value, bool):
            raise InvalidInputError(f"{name} must be {what}, got {value!r}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Validate an integer option within ``[low, high]`` (both inclusive).

    Python and numpy integers (and one-element integer arrays or tensors) are accepted;
    bools, floats and strings are not.

    Examples
    --------
    >>> check_int(3, "n_neighbors", low=1)
    3
    >>> check_int(0, "n_neighbors", low=1)
    Traceback (most recent call last):
    ...
    thrifty._errors.InvalidInputError: n_neighbors must be >= 1, got 0
    """
    value = _scalar(value, name, "an integer")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{name} must be an integer, got {value!r}") from None
    if low is not None and v < low:
        raise InvalidInputError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise InvalidInputError(f"{name} must be <= {high}, got {v}")
    return int(v)


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Validate a finite real option within ``[low, high]``; returns it as ``float``.

    Bounds are inclusive unless ``low_inclusive=False`` / ``high_inclusive=False``.
    Integers, floats and one-element numpy arrays or torch tensors are accepted; bools,
    strings, NaN and infinity are not.

    Examples
    --------
    >>> check_float(0.5, "lam", low=0.0, high=1.0)
    0.5
    >>> check_float(0, "temperature", low=0.0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    thrifty._errors.InvalidInputError: temperature must be > 0.0, got 0.0
    """
    value = _scalar(value, name, "a real number")
    if not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise InvalidInputError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInputError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (not low_inclusive and v == low)):
        raise InvalidInputError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {v}")
    if high is not None and (v > high or (not high_inclusive and v == high)):
        raise InvalidInputError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {v}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """Validate a boolean option (``True``/``False`` or a numpy bool only)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against its allowed values."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise InvalidInputError(f"{name} must be one of {allowed}; got {value!r}")
    return value
