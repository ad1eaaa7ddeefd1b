"""The shared matrix helpers of the core, against plain numpy."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thrifty import _core

finite_f32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 17)), elements=finite_f32))
def test_against_numpy(x):
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(_core.linalg_column_mean(x), x64.mean(axis=0), rtol=1e-12, atol=1e-9)
    norms = (x64 * x64).sum(axis=1)
    np.testing.assert_allclose(_core.linalg_row_norms_sq(x), norms.astype(np.float32), rtol=1e-6)
    n = np.sqrt(norms)[:, None]
    expected = np.where(n > 0, x64 / np.where(n > 0, n, 1), 0).astype(np.float32)
    np.testing.assert_allclose(_core.linalg_normalize_rows(x), expected, rtol=1e-6, atol=1e-7)


def test_outputs_are_owned_numpy_arrays():
    x = np.ones((3, 4), dtype=np.float32)
    y = _core.linalg_normalize_rows(x)
    assert y.shape == (3, 4) and y.dtype == np.float32 and y.flags.c_contiguous and y.flags.writeable
    assert not np.shares_memory(x, y)
