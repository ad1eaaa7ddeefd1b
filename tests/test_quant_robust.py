"""thrifty.quant under hostile or extreme input: saturation and overflow rules, memory
limits (a clean OutOfMemoryError, never an abort), and fuzzing of quant.load and of
hand-built QuantizedTensor fields (only thrifty's own exceptions, no crash, no hang, no
allocation the input does not justify)."""

import faulthandler
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import thrifty
from thrifty import quant

md = pytest.importorskip("ml_dtypes")

ALL = list(quant.FORMATS)
F32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------ saturation / overflow

@pytest.mark.parametrize("fmt,mdt,fmax", [("fp8_e4m3", md.float8_e4m3fn, 448.0),
                                          ("fp8_e5m2", md.float8_e5m2, 57344.0)])
def test_fp8_fixed_scale_saturates_quotients_that_overflow(fmt, mdt, fmax):
    x = np.array([3e38, -3e38, F32_MAX, 1.0, -2.5e38, 1e-3], np.float32)
    for rounding, kw in (("nearest", {}), ("stochastic", {"seed": 5})):
        q = quant.quantize(x, fmt, scale=0.5, rounding=rounding, **kw)
        y = quant.dequantize(q)
        assert np.isfinite(y).all()
        assert list(y[[0, 1, 2, 4]]) == [fmax * 0.5, -fmax * 0.5, fmax * 0.5, -fmax * 0.5]
    # nearest and saturating: the same codes as clamping in float64, then ml_dtypes
    q = quant.quantize(x, fmt, scale=0.5)
    want = np.clip(x.astype(np.float64) / 0.5, -fmax, fmax).astype(np.float32).astype(mdt)
    assert np.array_equal(q.data, want.view(np.uint8))
    # saturate=False keeps ml_dtypes' overflow codes on purpose (NaN for E4M3, Inf for E5M2)
    y = quant.dequantize(quant.quantize(x, fmt, scale=0.5, saturate=False))
    with np.errstate(over="ignore"):
        ref = (x / np.float32(0.5)).astype(mdt).astype(np.float32) * np.float32(0.5)
    assert np.array_equal(y, ref, equal_nan=True)
    assert not np.isfinite(y[0])


def test_fixed_scales_whose_range_overflows_are_refused():
    x = np.ones(4, np.float32)
    E = thrifty.InvalidInputError
    with pytest.raises(E, match="overflow"):
        quant.quantize(x, "fp8_e4m3", scale=1e36)  # 448 * 1e36 > float32 max
    with pytest.raises(E, match="overflow"):
        quant.quantize(x, "fp8_e5m2", scale=1e34)
    with pytest.raises(E, match="overflow"):
        quant.quantize(x, "int8", scale=1e-39)  # 1 / scale overflows: 0 * inf = NaN
    with pytest.raises(E, match="overflow"):
        quant.quantize(x, "int8", scale=3e36)  # -128 * scale overflows
    assert np.isfinite(quant.dequantize(quant.quantize(x, "fp8_e4m3", scale=7e35))).all()


@pytest.mark.parametrize("fmt", ["tq1_0", "tq2_0"])
def test_tq_block_scale_beyond_float16_is_refused(fmt):
    x = np.zeros((2, 256), np.float32)
    x[0, 3] = 65519.0  # rounds to 65504 in float16: fine
    y = quant.dequantize(quant.quantize(x, fmt))
    assert np.isfinite(y).all() and y[0, 3] == 65504.0
    for bad in (65520.0, -7e4, 3e38):
        x[1, 200] = bad
        with pytest.raises(thrifty.InvalidInputError, match="float16.*flat index 456"):
            quant.quantize(x, fmt)


def test_int4_range_beyond_float32_is_refused():
    x = np.zeros((2, 128), np.float32)
    x[1, :2] = [-3e38, 3e38]  # max - min overflows float32
    with pytest.raises(thrifty.InvalidInputError, match="group 1"):
        quant.quantize(x, "int4")
    # symmetric int4 handles the same values (scale = amax / 7.5)
    y = quant.dequantize(quant.quantize(x, "int4", symmetric=True))
    assert np.isfinite(y).all()


EXTREMES = [6e4, 65519.0, 65520.0, 1e30, 1e38, 3e38, 3.3e38, F32_MAX]


@pytest.mark.parametrize("fmt", ALL)
def test_quantize_never_returns_what_dequantizes_to_inf_or_nan(fmt):
    """For every format and extreme magnitudes: an InvalidInputError naming overflow,
    or a tensor whose dequantized values are all finite."""
    rng = np.random.default_rng(1)
    for big in EXTREMES:
        for spread in ("one", "both", "all"):
            x = rng.standard_normal((4, 256)).astype(np.float32)
            if spread == "one":
                x[2, 17] = big
            elif spread == "both":
                x[1, :2] = [big, -big]
            else:
                x *= np.float32(big / 5)
                x = np.clip(x, -big, big).astype(np.float32)
            try:
                q = quant.quantize(x, fmt)
            except thrifty.InvalidInputError as e:
                assert "float16" in str(e) or "overflow" in str(e), e
                continue
            with np.errstate(all="raise"):
                y = quant.dequantize(q)
            assert np.isfinite(y).all(), (fmt, big, spread)


# ------------------------------------------------------------------ memory limits

CHILD = r"""
import os, resource, sys
import numpy as np
import thrifty
from thrifty import quant

FORMATS = list(quant.FORMATS)
for f in FORMATS:  # warm up: thread pool, allocator arenas, lazy imports
    quant.dequantize(quant.quantize(np.ones((4, 256), np.float32), f))
quant.fp8_encode(np.ones(8, np.float64))
quant.fp4_encode(np.ones(8, np.float32))
quant.dequantize(quant.QuantizedTensor("int8", (8, 32), np.zeros(256, np.uint8),
                                       np.ones(1, np.float32), None, 256))

n = int(sys.argv[1])
x = np.zeros((n // 1024, 1024), np.float32)  # virtual memory only (calloc)
codes = np.zeros(n, np.uint8)
x64 = np.zeros(n // 2, np.float64)
qdata = quant.QuantizedTensor("int8", (n,), codes, np.ones(1, np.float32), None, n)
big = quant.QuantizedTensor("int8", (600_000_000,), np.zeros(600_000_000, np.uint8),
                            np.ones(1, np.float32), None, 600_000_000)
x600 = np.zeros(600_000_000, np.float32)

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

_, hard = resource.getrlimit(resource.RLIMIT_AS)

def attempt(name, fn):
    # a soft limit 16 MiB above what is mapped now: every attempt needs more
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 16 * 2**20, hard))
    try:
        fn()
    except thrifty.OutOfMemoryError as e:
        assert isinstance(e, MemoryError)
        print("OOM", name, flush=True)
    else:
        print("NO-ERROR", name, flush=True)

# the reported case: 600M values, default options (per-tensor int8)
attempt("int8-600M", lambda: quant.quantize(x600, "int8"))
attempt("dequantize-600M", lambda: quant.dequantize(big))
for f in FORMATS:
    gs = -1 if f in ("int8", "int4", "fp8_e4m3", "fp8_e5m2") else None
    attempt(f, lambda: quant.quantize(x, f, group_size=gs))
attempt("dequantize", lambda: quant.dequantize(qdata))
attempt("fp8_encode", lambda: quant.fp8_encode(x))
attempt("fp8_encode_f64", lambda: quant.fp8_encode(x64))
attempt("fp4_decode", lambda: quant.fp4_decode(codes))
attempt("float64-input", lambda: quant.quantize(x64, "int8"))
# still alive and working once memory is back
resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
del x600
print("ALIVE", quant.quantize(np.ones((2, 256), np.float32), "tq2_0").data.size, flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_memory_limit_gives_out_of_memory_error_not_abort(tmp_path):
    """Under RLIMIT_AS every buffer quant allocates fails cleanly: the child process
    prints one OOM line per attempt and survives (a Rust allocation abort would kill it
    with SIGABRT)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    # one malloc arena: glibc's per-thread arenas reserve 64 MiB of address space each,
    # inside which an allocation needs no new mapping and so passes any RLIMIT_AS
    env = dict(os.environ, THRIFTY_NUM_THREADS="2", MALLOC_ARENA_MAX="1")
    r = subprocess.run([sys.executable, str(script), str(2**28)], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-3000:])
    lines = r.stdout.split("\n")
    want = (["int8-600M", "dequantize-600M"] + ALL
            + ["dequantize", "fp8_encode", "fp8_encode_f64", "fp4_decode", "float64-input"])
    assert [ln for ln in lines if ln.startswith(("OOM", "NO-ERROR"))] == [f"OOM {w}" for w in want]
    assert "ALIVE 132" in lines


# ------------------------------------------------------------------ fuzzing quant.load

ALLOWED = (thrifty.ThriftyError,)


@pytest.fixture(scope="module")
def valid_file_bytes(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    tensors = {f: quant.quantize(x, f) for f in ("int4", "nvfp4", "tq1_0", "nf4", "ternary")}
    tensors["norm"] = np.arange(6, dtype=np.float16).reshape(2, 3)
    tensors["ids"] = np.arange(3, dtype=np.int64)
    p = tmp_path_factory.mktemp("fuzz") / "seed.safetensors"
    quant.save(p, tensors)
    return p.read_bytes()


def load_guarded(path, nbytes):
    """quant.load + dequantize of what it returns: only thrifty exceptions, and no
    Python allocation beyond a small multiple of the file size."""
    tracemalloc.start()
    try:
        try:
            got = quant.load(path)
        except ALLOWED:
            return "error"
        _, peak = tracemalloc.get_traced_memory()
        assert peak <= 8 * nbytes + 2**20, peak
        for name, v in got.items():
            if isinstance(v, quant.QuantizedTensor):
                try:
                    y = quant.dequantize(v)
                except ALLOWED:
                    continue
                assert y.nbytes <= 32 * v.data.nbytes + 4096
            else:
                assert isinstance(v, np.ndarray) and v.nbytes <= nbytes
        return "ok"
    finally:
        tracemalloc.stop()


@pytest.fixture
def watchdog():
    faulthandler.dump_traceback_later(120, exit=True)  # a hang ends the run, loudly
    yield
    faulthandler.cancel_dump_traceback_later()


def test_fuzz_load_byte_flips(tmp_path, valid_file_bytes, watchdog):
    raw = valid_file_bytes
    (hlen,) = struct.unpack("<Q", raw[:8])
    rnd = random.Random(1234)
    p = tmp_path / "f.safetensors"
    outcomes = {"ok": 0, "error": 0}
    t0 = time.perf_counter()
    for case in range(1500):
        b = bytearray(raw)
        for _ in range(rnd.choice((1, 1, 2, 4, 16))):
            # mostly the header (where the structure is), sometimes the length or data
            where = rnd.random()
            if where < 0.05:
                i = rnd.randrange(8)
            elif where < 0.8:
                i = 8 + rnd.randrange(hlen)
            else:
                i = rnd.randrange(len(b))
            b[i] = rnd.choice((rnd.randrange(256), b[i] ^ (1 << rnd.randrange(8)),
                               ord(rnd.choice('0123456789-.eE[]{}",:tn '))))
        if case % 10 == 0:
            b = b[: rnd.randrange(len(b))]  # truncation
        p.write_bytes(bytes(b))
        outcomes[load_guarded(p, len(b))] += 1
    assert outcomes["error"] > 600 and outcomes["ok"] > 30, outcomes
    assert time.perf_counter() - t0 < 60


def rewrite(raw, edit):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    hb = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(hb)) + hb + raw[8 + n:]


HOSTILE_VALUES = [-1, -2**63, 2**63, 2**64, 2**200, 1e400, -1e400, float("nan"), 1.5, True,
                  None, "3", [], [1, 2], {}, [[[[1]]]], 10**50, 0, 1]


def _paths(obj, prefix=()):
    """Every (path, value) of a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def test_fuzz_load_structured_header_mutations(tmp_path, valid_file_bytes, watchdog):
    """Every field of the header and of the thrifty description replaced by hostile
    values: huge, negative, non-finite, wrong types."""
    raw = valid_file_bytes
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    desc = json.loads(header["__metadata__"]["thrifty.quant"])
    p = tmp_path / "f.safetensors"
    rnd = random.Random(7)
    cases = 0
    for path, _ in list(_paths(header)):
        if not path or path[:1] == ("__metadata__",):
            continue
        for v in rnd.sample(HOSTILE_VALUES, 6):
            h = json.loads(json.dumps(header))
            _set(h, path, v)
            b = json.dumps(h, allow_nan=True).encode().replace(b"Infinity", b"1e400")
            p.write_bytes(struct.pack("<Q", len(b)) + b + raw[8 + n:])
            load_guarded(p, p.stat().st_size)
            cases += 1
    for path, _ in list(_paths(desc)):
        if not path:
            continue
        for v in rnd.sample(HOSTILE_VALUES, 8):
            d = json.loads(json.dumps(desc))
            _set(d, path, v)
            h = json.loads(json.dumps(header))
            h["__metadata__"]["thrifty.quant"] = json.dumps(d, allow_nan=True)
            b = json.dumps(h).encode()
            p.write_bytes(struct.pack("<Q", len(b)) + b + raw[8 + n:])
            load_guarded(p, p.stat().st_size)
            cases += 1
    assert cases > 500


def write_header(p, header, body=b""):
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + body)


def meta(tensors):
    return {"__metadata__": {"thrifty.quant": json.dumps({"layout_version": 1, "tensors": tensors})}}


def test_load_hostile_files_raise_format_error(tmp_path):
    p = tmp_path / "h.safetensors"
    ok_entry = {"format": "int8", "shape": [4], "group_size": 4, "data_shape": [4], "scales": "w.scales"}
    body = bytes(4) + np.ones(1, np.float32).tobytes()
    good = {**meta({"w": ok_entry}), "w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "w.scales": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    write_header(p, good, body)
    assert quant.load(p)["w"].shape == (4,)

    def bad(edit=None, raw_header=None, body_=body, match=None):
        h = json.loads(json.dumps(good))
        if edit:
            edit(h)
        write_header(p, raw_header if raw_header is not None else h, body_)
        with pytest.raises(thrifty.FormatError, match=match):
            quant.load(p)

    def desc(fn):
        def edit(h):
            d = json.loads(h["__metadata__"]["thrifty.quant"])
            fn(d)
            h["__metadata__"]["thrifty.quant"] = json.dumps(d)
        return edit

    bad(raw_header=b"[" * 100_000 + b"]" * 100_000, match="nested")
    bad(raw_header=b'{"a":' * 50_000 + b"1" + b"}" * 50_000, match="nested")
    bad(desc(lambda d: d.update(tensors={"w": {"x": [[[[[[[[[[1]]]]]]]]]]}})))
    bad(desc(lambda d: d.update(tensors=[1, 2])), match="'tensors' object")
    bad(desc(lambda d: d.update(tensors="w")), match="'tensors' object")
    bad(lambda h: h["__metadata__"].update({"thrifty.quant": "[" * 10**5}), match="nested")
    bad(lambda h: h["__metadata__"].update({"thrifty.quant": '"a"'}))
    for key, v in [("shape", [1e400]), ("shape", ["Infinity"]), ("shape", [-4]),
                   ("shape", [True, 4]), ("group_size", 1e400), ("group_size", -4),
                   ("group_size", 0), ("group_size", 2**64), ("group_size", "4"),
                   ("data_shape", [2**70]), ("tensor_scale", 2**40), ("scales", 3),
                   ("scales", "nope"), ("format", ["int8"])]:
        bad(desc(lambda d, key=key, v=v: d["tensors"]["w"].update({key: v})))
    # JSON with non-standard constants or huge literals
    for lit in (b"Infinity", b"-Infinity", b"NaN", b"1e400", b"1" * 5000):
        hb = json.dumps(good).encode().replace(b'"data_offsets": [0, 4]', b'"data_offsets": [0, ' + lit + b"]")
        bad(raw_header=hb)
        d = json.dumps({"layout_version": 1, "tensors": {"w": {**ok_entry, "group_size": 0}}})
        d = d.replace('"group_size": 0', '"group_size": ' + lit.decode())
        bad(lambda h, d=d: h["__metadata__"].update({"thrifty.quant": d}))
    bad(lambda h: h["w"].update(dtype="F32", shape=[1]), match="F32")  # packed bytes as F32
    bad(lambda h: h["w.scales"].update(dtype="U8", shape=[4]), match="U8")
    bad(lambda h: h["w"].update(data_offsets=[0, 8], shape=[8]), match="overlap")
    bad(lambda h: h["w.scales"].update(data_offsets=[0, 4]), match="overlap|starts")
    bad(lambda h: h["w"].update(data_offsets=[4, 0]))
    bad(lambda h: h["w"].update(shape=[2**62, 2**62, 2**62]))
    bad(lambda h: h["w"].update(shape=[1] * 100))
    bad(lambda h: h.update(x={"dtype": "U8", "shape": [0], "data_offsets": [9, 9]}))
    bad(lambda h: h.update(x=[1, 2]))
    bad(lambda h: h.update(x={"dtype": "Q8", "shape": [], "data_offsets": [8, 8]}))
    bad(lambda h: h["__metadata__"].update(other=5))
    bad(body_=body + b"extra", match="cover")
    bad(raw_header=json.dumps(good).encode()[:-1] + b',"w":{}}')  # duplicate key
    bad(raw_header=b"\xff\xfe{}")
    for cut in range(0, 8 + len(json.dumps(good)) + len(body) - 1, 7):
        whole = struct.pack("<Q", len(json.dumps(good))) + json.dumps(good).encode() + body
        p.write_bytes(whole[:cut])
        with pytest.raises(thrifty.FormatError):
            quant.load(p)


# ------------------------------------------------------------------ hand-built tensors

def test_dequantize_hand_built_with_bad_fields():
    ok = quant.quantize(np.ones((2, 64), np.float32), "int8")
    E = (thrifty.InvalidInputError, thrifty.FormatError)
    for shape in [(-2, 64), (2, -64), (0, 64), (2**64, 1), (2**40, 2**40), ()]:
        q = quant.QuantizedTensor("int8", (2, 64), ok.data, ok.scales, None, 128)
        q.shape = shape
        with pytest.raises(thrifty.FormatError, match="shape"):
            quant.dequantize(q)
        with pytest.raises(E):
            quant.dequantize(quant.QuantizedTensor("int8", shape, ok.data, ok.scales, None, 128))
    for g in (-1, 0, 2**64, 2**63, 10**30):
        with pytest.raises(thrifty.FormatError, match="group_size"):
            quant.dequantize(quant.QuantizedTensor("int8", (2, 64), ok.data, ok.scales, None, g))
    for field, v in [("group_size", 1.5), ("group_size", "128"), ("shape", (2.0, 64)),
                     ("shape", "ab"), ("tensor_scale", "x"), ("tensor_scale", 10**400)]:
        kw = dict(fmt="int8", shape=(2, 64), data=ok.data, scales=ok.scales, zero_points=None,
                  group_size=128)
        kw[field] = v
        with pytest.raises(thrifty.InvalidInputError):
            quant.QuantizedTensor(**kw)
        q = quant.QuantizedTensor("int8", (2, 64), ok.data, ok.scales, None, 128)
        setattr(q, field, v)
        with pytest.raises(thrifty.InvalidInputError):
            quant.dequantize(q)
    q = quant.QuantizedTensor("int8", (2, 64), ok.data, ok.scales, None, 128)
    assert np.array_equal(quant.dequantize(q), quant.dequantize(ok))


def test_fuzz_quantized_tensor_fields(watchdog):
    rnd = random.Random(99)
    rng = np.random.default_rng(99)
    refs = {f: quant.quantize(rng.standard_normal((4, 256)).astype(np.float32), f) for f in ALL}

    def pick_int():
        return rnd.choice([0, 1, -1, 2, 16, 32, 64, 128, 256, 1024, 2**31, 2**63 - 1, 2**63,
                           2**64, -2**63, 10**30, rnd.randrange(1, 5000)])

    def pick_array(ref):
        k = rnd.random()
        if ref is None or k < 0.1:
            return rnd.choice([None, [1, 2], "abc", 3.5, np.zeros(0, np.uint8), [[1], [2, 3]]])
        a = np.array(ref, copy=True)
        if k < 0.3:
            return a[: rnd.randrange(a.size + 1)].copy() if a.ndim == 1 else a.reshape(-1)[:rnd.randrange(a.size)]
        if k < 0.4:
            return a.astype(rnd.choice([np.float64, np.int8, np.float16, np.uint16]))
        if k < 0.6:
            flat = a.reshape(-1).view(np.uint8)
            for _ in range(rnd.randrange(1, 8)):
                flat[rnd.randrange(flat.size)] = rnd.randrange(256)
            return a
        if k < 0.65 and a.dtype == np.float32:
            a.reshape(-1)[rnd.randrange(a.size)] = rnd.choice([np.nan, np.inf, -np.inf, 3e38])
        return a

    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        fmt = rnd.choice(ALL + ["int3", None, 5])
        r = refs.get(fmt) or refs[rnd.choice(ALL)]
        shape = r.shape if rnd.random() < 0.5 else tuple(
            pick_int() for _ in range(rnd.randrange(0, 4)))
        g = r.group_size if rnd.random() < 0.5 else pick_int()
        ts = rnd.choice([r.tensor_scale, None, 0.0, -1.0, float("nan"), float("inf"), 1e-45, 3e38])
        try:
            q = quant.QuantizedTensor(fmt, shape, pick_array(r.data), pick_array(r.scales),
                                      pick_array(r.zero_points), g, ts)
            y = quant.dequantize(q)
        except ALLOWED:
            outcomes["error"] += 1
            continue
        assert y.nbytes <= 32 * np.asarray(q.data).nbytes + 4096
        outcomes["ok"] += 1
    assert outcomes["ok"] > 20 and outcomes["error"] > 1000, outcomes
