import numpy as np
import pytest

import thrifty
from thrifty._validation import as_float_matrix, as_float_vector, check_choice, check_float, check_int


def test_float32_c_contiguous_is_zero_copy():
    x = np.ones((5, 3), dtype=np.float32)
    assert as_float_matrix(x) is x


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_float64_converted_exactly(dtype, rng):
    x = rng.standard_normal((7, 4)).astype(dtype)
    y = as_float_matrix(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x.astype(np.float32))
    assert x.dtype == dtype  # input untouched


def test_non_native_byte_order_converted():
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    y = as_float_matrix(x)
    assert y.dtype == np.float32 and y.dtype.isnative
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("view", ["T", "fortran", "strided"])
def test_non_contiguous_copied_once(view, rng):
    base = rng.standard_normal((6, 8)).astype(np.float32)
    x = {"T": base.T, "fortran": np.asfortranarray(base), "strided": base[::2, ::3]}[view]
    y = as_float_matrix(x)
    assert y.flags.c_contiguous and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x)


def test_lists_are_read():
    y = as_float_matrix([[1.0, 2.0], [3.0, 4.5]])
    assert y.dtype == np.float32 and y.shape == (2, 2)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.ones((3, 2), dtype=np.int64), "integer dtype int64"),
        (np.ones((3, 2), dtype=bool), "boolean"),
        (np.ones((3, 2), dtype=np.complex64), "complex"),
        (np.array([["a", "b"]]), "string"),
        (np.array([[1, "a"]], dtype=object), "object"),
        (np.ones(3, dtype=np.float32), r"2-D .* single sample"),
        (np.ones((2, 2, 2), dtype=np.float32), "2-D"),
        (np.ones((0, 3), dtype=np.float32), "empty"),
        (np.ones((3, 0), dtype=np.float32), "empty"),
        (None, "None"),
        ("abc", "numeric array"),
        ([[1.0, 2.0], [3.0]], "could not be read"),
    ],
)
def test_rejections(x, match):
    with pytest.raises(thrifty.InvalidInputError, match=match):
        as_float_matrix(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_with_position(bad):
    x = np.zeros((4, 5), dtype=np.float32)
    x[2, 3] = bad
    with pytest.raises(thrifty.InvalidInputError, match=r"position \(2, 3\)"):
        as_float_matrix(x, "embeddings")
    assert as_float_matrix(x, finite=False) is x


def test_feature_count_and_empty_rows():
    assert as_float_matrix(np.ones((0, 3)), allow_empty=True).shape == (0, 3)
    with pytest.raises(thrifty.InvalidInputError, match="has 3 features, expected 4"):
        as_float_matrix(np.ones((2, 3)), n_features=4)


def test_vector():
    assert as_float_vector([1, 2.5]).dtype == np.float32
    with pytest.raises(thrifty.InvalidInputError, match="1-D"):
        as_float_vector(np.ones((2, 2)))


def test_scalar_checks():
    assert check_int(np.int64(3), "k", low=1) == 3
    for bad in [True, 2.0, "3"]:
        with pytest.raises(thrifty.InvalidInputError):
            check_int(bad, "k")
    with pytest.raises(thrifty.InvalidInputError, match="k must be >= 1, got 0"):
        check_int(0, "k", low=1)
    assert check_float(0.5, "p", low=0, high=1) == 0.5
    with pytest.raises(thrifty.InvalidInputError, match="finite"):
        check_float(float("nan"), "p")
    with pytest.raises(thrifty.InvalidInputError, match="> 0"):
        check_float(0, "t", low=0, low_inclusive=False)
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(thrifty.InvalidInputError, match="'a', 'b'"):
        check_choice("c", "mode", ("a", "b"))


def test_torch_cpu_tensor_zero_copy():
    torch = pytest.importorskip("torch")
    t = torch.ones((3, 4), dtype=torch.float32)
    y = as_float_matrix(t)
    assert np.shares_memory(y, t.numpy())
