"""Element codecs (FP8 E4M3/E5M2, FP4 E2M1) against ml_dtypes, bit for bit."""

import numpy as np
import pytest

import thrifty
from thrifty import quant

md = pytest.importorskip("ml_dtypes")

CODECS = [
    ("e4m3", md.float8_e4m3fn, 448.0, 256),
    ("e5m2", md.float8_e5m2, 57344.0, 256),
    ("e2m1", md.float4_e2m1fn, 6.0, 16),
]


def enc(x, name, saturate):
    if name == "e2m1":
        return quant.fp4_encode(x, saturate=saturate)
    return quant.fp8_encode(x, name, saturate=saturate)


def dec(c, name):
    return quant.fp4_decode(c) if name == "e2m1" else quant.fp8_decode(c, name)


def pattern_set(seed=0):
    """Float32 bit patterns covering every class: all (sign, exponent, 10 top mantissa
    bits) combinations with low-bit variants that make exact ties and near-ties for
    every target precision, plus random patterns and named edge values."""
    rng = np.random.default_rng(seed)
    top = np.arange(1 << 19, dtype=np.uint32) << np.uint32(13)
    lows = np.array([0, 1, 0x1000, 0x0FFF, 0x1FFF], dtype=np.uint32)
    grid = (top[:, None] | lows[None, :]).ravel()
    rand = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 448, 464, 480, 449, 57344, 61440,
                      65536, 6.0, 5.0, 7.0, 0.25, 0.75, 2 ** -6, 2 ** -9, 2 ** -10,
                      3 * 2 ** -11, 2 ** -16, 2 ** -17, 1e-45, 3.4e38], dtype=np.float32)
    return np.concatenate([grid, rand, edges.view(np.uint32)]).view(np.float32)


@pytest.fixture(scope="module")
def patterns():
    return pattern_set()


@pytest.mark.parametrize("name,mdt,fmax,ncodes", CODECS)
def test_encode_matches_ml_dtypes_unsaturated(patterns, name, mdt, fmax, ncodes):
    with np.errstate(invalid="ignore", over="ignore"):
        want = patterns.astype(mdt).view(np.uint8)
    got = enc(patterns, name, False)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (name, patterns[bad[:5]], got[bad[:5]], want[bad[:5]])


@pytest.mark.parametrize("name,mdt,fmax,ncodes", CODECS)
def test_encode_saturated_is_clamp_then_cast(patterns, name, mdt, fmax, ncodes):
    finite = np.isfinite(patterns)
    clamped = np.where(finite, np.clip(patterns, -fmax, fmax), patterns)
    with np.errstate(invalid="ignore", over="ignore"):
        want = clamped.astype(mdt).view(np.uint8)
    got = enc(patterns, name, True)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name,mdt,fmax,ncodes", CODECS)
def test_every_code_decodes_like_ml_dtypes_and_round_trips(name, mdt, fmax, ncodes):
    codes = np.arange(ncodes, dtype=np.uint8)
    got = dec(codes, name)
    want = codes.view(mdt).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # +-0 too
    for sat in (False, True):
        back = enc(got, name, sat)
        assert np.array_equal(back[~nan], codes[~nan])
        with np.errstate(invalid="ignore"):
            assert np.array_equal(back[nan], got[nan].astype(mdt).view(np.uint8))
    assert dec(enc(np.float32(fmax), name, False), name) == fmax


def test_known_codes():
    assert quant.fp8_encode(np.float32(464.0), "e4m3", saturate=False) == 0x7E  # tie -> even
    assert quant.fp8_encode(np.float32(500.0), "e4m3", saturate=False) == 0x7F  # NaN
    assert quant.fp8_encode(np.float32(500.0), "e4m3") == 0x7E
    assert quant.fp8_encode(np.float32(-1e9), "e5m2", saturate=False) == 0xFC  # -Inf
    assert quant.fp8_encode(np.float32(np.inf), "e5m2") == 0x7C  # Inf stays Inf
    assert quant.fp8_encode(np.float32(-0.0), "e5m2") == 0x80
    assert quant.fp8_encode(np.float32(2.0 ** -10), "e4m3") == 0  # tie to even (0)
    assert quant.fp4_encode(np.float32(np.inf)) == 7


def test_shapes_dtypes_and_empty():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)  # float64 converted once
    c = quant.fp8_encode(x, "fp8_e5m2")
    assert c.shape == (2, 3, 4) and c.dtype == np.uint8
    assert quant.fp8_decode(c, "e5m2").shape == (2, 3, 4)
    assert quant.fp8_encode(np.zeros(0, np.float32)).shape == (0,)
    assert quant.fp4_encode(np.float16([1.5]))[0] == 3
    # a non-contiguous view is read correctly
    v = np.arange(10, dtype=np.float32)[::2]
    assert np.array_equal(quant.fp8_decode(quant.fp8_encode(v)), v)


def test_thread_count_does_not_matter(patterns):
    thrifty.set_num_threads(1)
    a = quant.fp8_encode(patterns, "e4m3")
    thrifty.set_num_threads(2)
    assert np.array_equal(a, quant.fp8_encode(patterns, "e4m3"))


def test_bad_inputs():
    with pytest.raises(thrifty.InvalidInputError, match="e4m3"):
        quant.fp8_encode(np.ones(3, np.float32), "e3m4")
    with pytest.raises(thrifty.InvalidInputError, match="floating-point"):
        quant.fp8_encode(np.ones(3, np.int32))
    with pytest.raises(thrifty.InvalidInputError, match="uint8"):
        quant.fp8_decode(np.ones(3, np.int64))
    with pytest.raises(thrifty.FormatError, match="out of range"):
        quant.fp4_decode(np.array([3, 16], np.uint8))
    with pytest.raises(thrifty.InvalidInputError, match="saturate"):
        quant.fp4_encode(np.ones(2, np.float32), saturate="yes")
    with pytest.raises(thrifty.InvalidInputError):
        quant.fp8_encode("abc")


def test_torch_cpu_tensor_without_copy():
    torch = pytest.importorskip("torch")
    t = torch.linspace(-500, 500, 1001)
    assert np.array_equal(quant.fp8_encode(t, "e4m3"), quant.fp8_encode(t.numpy(), "e4m3"))
    want = t.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(quant.fp8_encode(t.clamp(-448, 448), "e4m3"), want)


def midpoints64(mdt, ncodes):
    """float64 values within 1e-12 (relative) of every midpoint between neighbouring
    finite codes, on both sides, plus the midpoints themselves and float64 edge values."""
    codes = np.arange(ncodes, dtype=np.uint8)
    v = np.unique(codes.view(mdt).astype(np.float64))
    v = v[np.isfinite(v)]
    mids = (v[:-1] + v[1:]) / 2
    eps = np.maximum(np.abs(mids), 2.0 ** -30) * 1e-12
    near = np.concatenate([mids, mids - eps, mids + eps, np.nextafter(mids, np.inf),
                           np.nextafter(mids, -np.inf)])
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, 1e-310,
                      3.5e38, 448.0 + 16 - 1e-9, 57344.0 + 4096 + 1e-9])
    rng = np.random.default_rng(1)
    rand = rng.standard_normal(10_000) * np.exp(rng.uniform(-30, 30, 10_000))
    return np.concatenate([near, -near, edges, rand])


@pytest.mark.parametrize("name,mdt,fmax,ncodes", CODECS)
def test_float64_rounds_directly_like_ml_dtypes(name, mdt, fmax, ncodes):
    x = midpoints64(mdt, ncodes)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x.astype(mdt).view(np.uint8)
        # the old path (float64 -> float32 -> code) really differs on these values
        twice = x.astype(np.float32).astype(mdt).view(np.uint8)
    assert (twice != want).sum() > 0
    got = enc(x, name, False)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (name, x[bad[:5]], got[bad[:5]], want[bad[:5]])
    # saturating: the same as clamping in float64, then casting
    fin = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        want_sat = np.where(fin, np.clip(x, -fmax, fmax), x).astype(mdt).view(np.uint8)
    assert np.array_equal(enc(x, name, True), want_sat)
    # float64 lists and non-contiguous views take the same path
    assert np.array_equal(enc(list(x[:50]), name, False), want[:50])
    assert np.array_equal(enc(x[::2], name, False), want[::2])
