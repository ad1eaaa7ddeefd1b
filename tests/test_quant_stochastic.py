"""Stochastic rounding: the documented counter-based stream, unbiasedness,
reproducibility and independence from the thread count."""

import numpy as np
import pytest

import thrifty
from thrifty import quant

M64 = (1 << 64) - 1


def mix(z):
    """SplitMix64 finaliser on uint64 numpy arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed, n):
    key = mix(np.uint64(seed))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = mix(key ^ (i * np.uint64(0x9E3779B97F4A7C15)))
    return (u >> np.uint64(32)).astype(np.float64) / 2.0 ** 32


def test_stream_matches_documented_formula():
    x = np.random.default_rng(0).uniform(-5, 5, 10_000).astype(np.float32)
    seed = 2**63 + 12345
    q = quant.quantize(x, "int8", scale=1.0, rounding="stochastic", seed=seed)
    f = np.floor(x)
    want = f + (uniforms(seed, x.size) < (x - f).astype(np.float64))
    assert np.array_equal(q.data.view(np.int8), want.astype(np.int8))


FORMATS = ["ternary", "int8", "int4", "fp8_e4m3", "fp8_e5m2", "mxfp4", "mxfp8_e4m3", "nvfp4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reproducible_and_thread_independent(fmt):
    x = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    thrifty.set_num_threads(1)
    a = quant.quantize(x, fmt, rounding="stochastic", seed=7)
    thrifty.set_num_threads(2)
    b = quant.quantize(x, fmt, rounding="stochastic", seed=7)
    c = quant.quantize(x, fmt, rounding="stochastic", seed=8)
    assert np.array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    n = quant.quantize(x, fmt)
    assert not np.array_equal(a.data, n.data)


def test_unbiased_constant():
    n = 1_000_000
    x = np.full(n, 0.3, np.float32)
    q = quant.quantize(x, "int8", scale=1.0, rounding="stochastic", seed=3)
    m = q.data.view(np.int8).mean()
    assert abs(m - 0.3) < 5 * np.sqrt(0.21 / n)
    y = quant.dequantize(quant.quantize(np.full(n, 1.03, np.float32), "fp8_e4m3", scale=1.0,
                                        rounding="stochastic", seed=4))
    assert set(np.unique(y)) == {1.0, 1.125}
    p = (1.03 - 1.0) / 0.125
    assert abs(y.mean() - 1.03) < 5 * 0.125 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unbiased_in_expectation(fmt):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 128)).astype(np.float32)
    x[0, 0] = 3.0  # the largest value fixes the scales
    seeds = 300
    ys = np.stack([quant.dequantize(quant.quantize(x, fmt, rounding="stochastic", seed=s))
                   for s in range(seeds)])
    target = x
    if fmt == "ternary":
        q = quant.quantize(x, fmt)
        s = q.scales[0]
        target = np.clip(x / s, -1, 1) * s
    if fmt.startswith("mx"):
        # OCP MX clamps elements above the element max (amax / X can reach 8 > 6 for
        # E2M1, 512 > 448 for E4M3): expectations are of the clamped values.
        fmax = {"mxfp4": 6.0, "mxfp8_e4m3": 448.0}[fmt]
        xs = np.ldexp(1.0, quant.quantize(x, fmt).scales.astype(int) - 127)
        lim = np.repeat(xs * fmax, 32).reshape(x.shape)
        target = np.clip(x, -lim, lim)
    # The largest value may be clamped (int8 maps amax to 127.5 -> 127): leave it out.
    d = (ys - target).reshape(seeds, -1)[:, 1:]
    # per-seed total deviation: i.i.d. over seeds, mean 0 iff rounding is unbiased
    tot = d.sum(axis=1)
    assert tot.std() > 0
    assert abs(tot.mean()) < 5 * tot.std() / np.sqrt(seeds)
    # and per element, the mean of the draws is close to the value
    assert np.abs(d.mean(axis=0)).max() < 0.1 * np.abs(x).max()


def test_seed_validation():
    x = np.ones(8, np.float32)
    with pytest.raises(thrifty.InvalidInputError, match="seed"):
        quant.quantize(x, "int8", rounding="stochastic", seed=-1)
    with pytest.raises(thrifty.InvalidInputError, match="seed"):
        quant.quantize(x, "int8", rounding="stochastic", seed=2**64)
    q = quant.quantize(x, "int8", rounding="stochastic")  # random seed
    assert q.data.shape == (8,)


@pytest.mark.parametrize("fmt,elem,max_value", [("fp8_e4m3", "float8_e4m3fn", 448.0),
                                                ("fp8_e5m2", "float8_e5m2", 57344.0)])
def test_float_formats_follow_the_documented_bracketing_rule(fmt, elem, max_value):
    """lo = the largest code value <= |x| (clamped to max), hi = the next code; hi when
    uniform * (hi - lo) < |x| - lo (float64), sign kept; the code values from ml_dtypes."""
    md = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(4)
    x = np.concatenate([
        rng.standard_normal(20_000) * np.exp(rng.uniform(-25, 12, 20_000)),  # all binades
        rng.integers(-64, 64, 2000) / 16,  # exact codes and midpoints
        [0.0, -0.0, max_value, -max_value, 1e30, -3e38, 2.0**-20, -(2.0**-20)],
    ]).astype(np.float32)
    seed = 99
    q = quant.quantize(x, fmt, scale=1.0, rounding="stochastic", seed=seed)
    codes = np.arange(128, dtype=np.uint8)
    values = codes.view(getattr(md, elem)).astype(np.float64)
    ok = np.isfinite(values) & (values <= max_value)
    codes, values = codes[ok], values[ok]  # increasing magnitudes
    a = np.minimum(np.abs(x.astype(np.float64)), max_value)
    k = np.searchsorted(values, a, side="right") - 1
    top = k == len(values) - 1
    kh = np.minimum(k + 1, len(values) - 1)
    vl, vh = values[k], values[kh]
    u = uniforms(seed, x.size)
    up = ~top & (u * (vh - vl) < a - vl)
    sign = np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    want = codes[np.where(up, kh, k)] | sign
    assert np.array_equal(q.data, want)


def test_every_kernel_level_gives_the_same_codes():
    """The stochastic kernels run with AVX-512, AVX2 or none (THRIFTY_ISA caps the
    level): the bytes are the same at every level."""
    import os
    import subprocess
    import sys

    probe = (
        "import hashlib, numpy as np\n"
        "from thrifty import quant\n"
        "rng = np.random.default_rng(2)\n"
        "x = (rng.standard_normal((64, 512)) * np.exp(rng.uniform(-20, 8, (64, 1))))"
        ".astype(np.float32)\n"
        f"for fmt in {FORMATS!r}:\n"
        "    q = quant.quantize(x, fmt, rounding='stochastic', seed=5)\n"
        "    print(fmt, hashlib.sha256(q.data.tobytes()).hexdigest())\n"
    )
    outs = {}
    for isa in ("native", "avx2", "scalar"):
        env = dict(os.environ, THRIFTY_ISA=isa)
        r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs[isa] = r.stdout
    assert outs["native"] == outs["avx2"] == outs["scalar"]
    assert len(outs["native"].splitlines()) == len(FORMATS)
