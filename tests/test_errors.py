import pickle

import numpy as np
import pytest

import thrifty
from thrifty import _core


def test_hierarchy():
    assert issubclass(thrifty.InvalidInputError, thrifty.ThriftyError)
    assert issubclass(thrifty.InvalidInputError, ValueError)
    assert issubclass(thrifty.FormatError, thrifty.ThriftyError)
    assert issubclass(thrifty.FormatError, ValueError)
    assert issubclass(thrifty.InternalError, thrifty.ThriftyError)
    assert not issubclass(thrifty.InternalError, ValueError)


def test_exceptions_pickle():
    e = pickle.loads(pickle.dumps(thrifty.InvalidInputError("bad k")))
    assert isinstance(e, thrifty.InvalidInputError) and str(e) == "bad k"


def test_rust_panic_becomes_internal_error_and_interpreter_survives():
    with pytest.raises(thrifty.InternalError, match=r"panic: boom 42.*report"):
        _core._panic("boom 42")
    # The pool is still usable after a panic on one of its workers.
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(_core.linalg_column_mean(x), x.mean(axis=0))
    with pytest.raises(thrifty.ThriftyError):
        _core._panic("again")


def test_core_error_maps_to_invalid_input():
    x = np.ones((3, 2), dtype=np.float32)
    x[2, 1] = np.nan
    # bypassing the Python validation on purpose: the Rust check must fire
    with pytest.raises(thrifty.InvalidInputError, match=r"non-finite value \(NaN\) at row 2, column 1"):
        _core.linalg_column_mean(x)
    with pytest.raises(thrifty.InvalidInputError, match="empty"):
        _core.linalg_column_mean(np.ones((0, 3), dtype=np.float32))


def test_binding_rejects_wrong_dtype_and_layout():
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        _core.linalg_column_mean(x.astype(np.float64))
    with pytest.raises(thrifty.InvalidInputError, match="C-contiguous"):
        _core.linalg_column_mean(np.asfortranarray(x))
    with pytest.raises(thrifty.InvalidInputError, match="C-contiguous"):
        _core.linalg_column_mean(x[:, ::2])
