"""save/load: safetensors files any safetensors reader opens; corrupt files fail cleanly."""

import json
import os
import struct

import numpy as np
import pytest

import thrifty
from thrifty import quant

ALL = ["ternary", "tq1_0", "tq2_0", "int8", "int4", "nf4", "fp8_e4m3", "fp8_e5m2",
       "mxfp4", "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4"]


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    return {f"layer.{f}": quant.quantize(x, f) for f in ALL}


def test_round_trip_every_format(tmp_path, tensors):
    p = tmp_path / "q.safetensors"
    quant.save(p, tensors, metadata={"model": "demo"})
    back = quant.load(p)
    assert list(back) == list(tensors)
    for name, q in tensors.items():
        r = back[name]
        assert (r.fmt, r.shape, r.group_size, r.tensor_scale) == (q.fmt, q.shape, q.group_size, q.tensor_scale)
        assert r.data.shape == q.data.shape and np.array_equal(r.data, q.data)
        for a, b in ((r.scales, q.scales), (r.zero_points, q.zero_points)):
            assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b))
        assert r.nbytes == q.nbytes
        assert np.array_equal(quant.dequantize(r), quant.dequantize(q))
    assert [f for f in os.listdir(tmp_path)] == ["q.safetensors"]  # no temp files left


def test_readable_by_safetensors(tmp_path, tensors):
    st = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    p = str(tmp_path / "q.safetensors")
    quant.save(p, tensors, metadata={"model": "demo"})
    plain = load_file(p)
    q = tensors["layer.int4"]
    assert np.array_equal(plain["layer.int4"], q.data)
    assert np.array_equal(plain["layer.int4.scales"], q.scales)
    assert np.array_equal(plain["layer.int4.zero_points"], q.zero_points)
    assert plain["layer.mxfp4.scales"].dtype == np.uint8
    with st.safe_open(p, framework="numpy") as f:
        meta = f.metadata()
    assert meta["model"] == "demo"
    desc = json.loads(meta["thrifty.quant"])
    assert desc["layout_version"] == 1
    assert desc["tensors"]["layer.nvfp4"]["format"] == "nvfp4"
    assert desc["tensors"]["layer.ternary"]["shape"] == [6, 512]


def test_overwrite_is_atomic_on_failure(tmp_path, tensors):
    p = tmp_path / "q.safetensors"
    quant.save(p, {"a": tensors["layer.int8"]})
    before = p.read_bytes()
    with pytest.raises(thrifty.InvalidInputError):
        quant.save(p, {"a": tensors["layer.int8"], "b": [1.0, 2.0]})
    assert p.read_bytes() == before
    assert len(os.listdir(tmp_path)) == 1


def test_truncated_files_raise_format_error(tmp_path, tensors):
    p = tmp_path / "q.safetensors"
    quant.save(p, {"w": tensors["layer.nf4"], "v": tensors["layer.nvfp4"]})
    raw = p.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for cut in sorted(set(list(range(0, 80)) + list(range(80, len(raw), 97)) + [len(raw) - 1])):
        bad.write_bytes(raw[:cut])
        with pytest.raises(thrifty.FormatError):
            quant.load(bad)


def rewrite_header(raw, edit):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + raw[8 + n:]


def edit_desc(fn):
    def edit(h):
        d = json.loads(h["__metadata__"]["thrifty.quant"])
        fn(d)
        h["__metadata__"]["thrifty.quant"] = json.dumps(d)
    return edit


CORRUPTIONS = {
    "not json": lambda raw: raw[:8] + b"{" * struct.unpack("<Q", raw[:8])[0] + raw[8 + struct.unpack("<Q", raw[:8])[0]:],
    "huge header length": lambda raw: struct.pack("<Q", 2**62) + raw[8:],
    "no metadata": lambda raw: rewrite_header(raw, lambda h: h.pop("__metadata__")),
    "bad dtype": lambda raw: rewrite_header(raw, lambda h: h["w"].update(dtype="F64")),
    "offsets past end": lambda raw: rewrite_header(raw, lambda h: h["w"].update(data_offsets=[0, 10**9])),
    "shape mismatch": lambda raw: rewrite_header(raw, lambda h: h["w"].update(shape=[3])),
    "layout version": lambda raw: rewrite_header(raw, edit_desc(lambda d: d.update(layout_version=99))),
    "unknown format": lambda raw: rewrite_header(raw, edit_desc(lambda d: d["tensors"]["w"].update(format="int3"))),
    "wrong shape": lambda raw: rewrite_header(raw, edit_desc(lambda d: d["tensors"]["w"].update(shape=[6, 256]))),
    "wrong group": lambda raw: rewrite_header(raw, edit_desc(lambda d: d["tensors"]["w"].update(group_size=32))),
    "missing scales": lambda raw: rewrite_header(raw, edit_desc(lambda d: d["tensors"]["w"].pop("scales"))),
    "bad description": lambda raw: rewrite_header(raw, edit_desc(lambda d: d["tensors"].update(w=[1, 2]))),
    "metadata not json": lambda raw: rewrite_header(raw, lambda h: h["__metadata__"].update({"thrifty.quant": "{"})),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_headers_raise_format_error(tmp_path, tensors, kind):
    p = tmp_path / "q.safetensors"
    quant.save(p, {"w": tensors["layer.nf4"]})
    p.write_bytes(CORRUPTIONS[kind](p.read_bytes()))
    with pytest.raises(thrifty.FormatError):
        quant.load(p)


def test_corrupt_codes_are_caught_at_dequantize(tmp_path, tensors):
    p = tmp_path / "q.safetensors"
    quant.save(p, {"w": tensors["layer.ternary"]})
    raw = bytearray(p.read_bytes())
    raw[-5] = 0xFF  # inside the packed codes -> code 3
    p.write_bytes(bytes(raw))
    q = quant.load(p)["w"]
    with pytest.raises(thrifty.FormatError, match="code 3"):
        quant.dequantize(q)


def test_save_bad_arguments(tmp_path, tensors):
    p = tmp_path / "q.safetensors"
    q = tensors["layer.int8"]
    E = thrifty.InvalidInputError
    with pytest.raises(E, match="mapping"):
        quant.save(p, [q])
    with pytest.raises(E, match="QuantizedTensor"):
        quant.save(p, {"a": [1.0, 2.0]})
    with pytest.raises(E, match="non-empty"):
        quant.save(p, {"": q})
    with pytest.raises(E, match="str"):
        quant.save(p, {"a": q}, metadata={"k": 1})
    with pytest.raises(E, match="reserved"):
        quant.save(p, {"a": q}, metadata={"thrifty.quant": "x"})
    with pytest.raises(E, match="collide"):
        quant.save(p, {"a": q, "a.scales": q})
    assert not p.exists()
    with pytest.raises(FileNotFoundError):
        quant.load(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------ files with plain tensors

def plain_tensors():
    """One tensor of every safetensors dtype torch can make (bf16, float8 included)."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    r = torch.randn(3, 5, generator=g)
    t = {
        "model.norm.weight": r.to(torch.float16), "ids": torch.arange(-3, 12).reshape(3, 5),
        "f64": r.to(torch.float64), "i8": (r * 40).to(torch.int8), "bf16": r.to(torch.bfloat16),
        "u8": (r.abs() * 40).to(torch.uint8), "i16": (r * 900).to(torch.int16),
        "i32": (r * 9e5).to(torch.int32), "f32": r, "mask": r > 0,
        "f8e4m3": r.to(torch.float8_e4m3fn), "f8e5m2": r.to(torch.float8_e5m2),
        "c64": torch.complex(r, -r), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    }
    for name in ("uint16", "uint32", "uint64"):
        if hasattr(torch, name):
            t[name] = (r.abs() * 100).to(torch.int64).to(getattr(torch, name))
    return t


def as_numpy(t):
    """What quant.load should give for a torch tensor: numpy (ml_dtypes for bf16/fp8)."""
    import torch
    md = pytest.importorskip("ml_dtypes")
    special = {torch.bfloat16: (torch.int16, md.bfloat16), torch.float8_e4m3fn: (torch.uint8, md.float8_e4m3fn),
               torch.float8_e5m2: (torch.uint8, md.float8_e5m2)}
    if t.dtype in special:
        via, dt = special[t.dtype]
        return t.view(via).numpy().view(dt)
    if t.dtype in (getattr(torch, "uint16", None), getattr(torch, "uint32", None), getattr(torch, "uint64", None)):
        return t.to(torch.int64).numpy().astype({torch.uint16: np.uint16, torch.uint32: np.uint32}.get(t.dtype, np.uint64))
    return t.numpy()


def test_files_mixing_packed_and_plain_tensors_round_trip_with_safetensors(tmp_path, tensors):
    """A checkpoint written by the safetensors library with thrifty's packed tensors next
    to plain tensors of every dtype: quant.load gives QuantizedTensors and numpy arrays,
    and quant.save of what load returned writes a file in which safetensors finds every
    tensor with its dtype, shape and bytes unchanged (and the same thrifty metadata)."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    plain = plain_tensors()
    packed_path = tmp_path / "packed.safetensors"
    quant.save(packed_path, tensors)
    packed = st.load_file(str(packed_path))
    from safetensors import safe_open
    with safe_open(str(packed_path), framework="pt") as f:
        meta = f.metadata()
    mixed = tmp_path / "mixed.safetensors"
    st.save_file({**packed, **plain}, str(mixed), metadata=meta)

    back = quant.load(mixed)
    for name, q in tensors.items():
        r = back[name]
        assert isinstance(r, quant.QuantizedTensor) and np.array_equal(r.data, q.data)
        assert np.array_equal(quant.dequantize(r), quant.dequantize(q))
    assert not any(n.endswith((".scales", ".zero_points")) for n in back)
    for name, t in plain.items():
        a, want = back[name], as_numpy(t)
        assert isinstance(a, np.ndarray) and a.dtype == want.dtype and a.shape == want.shape, name
        assert a.tobytes() == want.tobytes(), name

    again = tmp_path / "again.safetensors"
    quant.save(again, back)
    assert quant.load(again).keys() == back.keys()
    ref = st.load_file(str(mixed))
    for name, t in st.load_file(str(again)).items():
        assert t.dtype == ref[name].dtype and t.shape == ref[name].shape, name
        assert torch.equal(t.reshape(-1).view(torch.uint8), ref[name].reshape(-1).view(torch.uint8)), name
    with safe_open(str(again), framework="pt") as f:
        assert json.loads(f.metadata()["thrifty.quant"]) == json.loads(meta["thrifty.quant"])


def test_plain_dtypes_without_ml_dtypes_keep_their_bits(tmp_path, monkeypatch):
    """Without ml_dtypes, bf16 / fp8 come back as raw uint16 / uint8 carrying the
    safetensors dtype in the numpy dtype's metadata, and save writes them back as they
    were."""
    st = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    src = tmp_path / "src.safetensors"
    q = quant.quantize(np.ones((2, 32), np.float32), "mxfp4")
    quant.save(src, {"w": q})
    t = {k: v for k, v in st.load_file(str(src)).items()}
    t["bf16"] = torch.randn(4, 3).to(torch.bfloat16)
    t["f8"] = torch.randn(5).to(torch.float8_e4m3fn)
    from safetensors import safe_open
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    st.save_file(t, str(src), metadata=meta)
    monkeypatch.setattr(quant, "_ml_dtype", lambda name: None)
    back = quant.load(src)
    assert back["bf16"].dtype == np.uint16 and back["bf16"].dtype.metadata == {"safetensors_dtype": "BF16"}
    assert np.array_equal(back["bf16"], t["bf16"].view(torch.int16).numpy().view(np.uint16))
    assert back["f8"].dtype == np.uint8 and back["f8"].dtype.metadata["safetensors_dtype"] == "F8_E4M3"
    out = tmp_path / "out.safetensors"
    quant.save(out, back)
    r = st.load_file(str(out))
    assert r["bf16"].dtype == torch.bfloat16 and torch.equal(r["bf16"], t["bf16"])
    assert r["f8"].dtype == torch.float8_e4m3fn and torch.equal(r["f8"].view(torch.uint8), t["f8"].view(torch.uint8))


def test_sub_byte_dtypes_are_kept_as_packed_bytes(tmp_path):
    """F4 / F6 tensors (packed by safetensors) come back as uint8 bytes with their
    dtype and shape in the dtype metadata, and are written back unchanged."""
    p = tmp_path / "f4.safetensors"
    desc = json.dumps({"layout_version": 1, "tensors": {}})
    header = {"__metadata__": {"thrifty.quant": desc},
              "w4": {"dtype": "F4", "shape": [3, 4], "data_offsets": [0, 6]},
              "w6": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [6, 9]}}
    hb = json.dumps(header).encode()
    body = bytes(range(1, 10))
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + body)
    back = quant.load(p)
    assert back["w4"].tobytes() == body[:6] and back["w4"].dtype.metadata["shape"] == (3, 4)
    assert back["w6"].tobytes() == body[6:]
    out = tmp_path / "o.safetensors"
    quant.save(out, back)
    (n,) = struct.unpack("<Q", out.read_bytes()[:8])
    h = json.loads(out.read_bytes()[8:8 + n])
    assert h["w4"]["dtype"] == "F4" and h["w4"]["shape"] == [3, 4]
    assert h["w6"]["dtype"] == "F6_E2M3" and out.read_bytes()[8 + n:] == body
    header["w6"]["shape"] = [5]  # 30 bits: not whole bytes
    hb = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + body)
    with pytest.raises(thrifty.FormatError):
        quant.load(p)


def test_save_refuses_arrays_safetensors_cannot_hold(tmp_path):
    p = tmp_path / "x.safetensors"
    for bad in (np.array(["a"]), np.zeros(2, dtype=[("a", "<f4")]), np.array([None]),
                np.zeros(2, np.complex128)):
        with pytest.raises(thrifty.InvalidInputError):
            quant.save(p, {"x": bad})
    assert not p.exists()
    # big-endian input is stored little-endian
    quant.save(p, {"x": np.arange(3, dtype=">i4")})
    a = quant.load(p)["x"]
    assert a.dtype == np.dtype("<i4") and list(a) == [0, 1, 2]


def test_saved_files_honour_the_umask(tmp_path):
    q = quant.quantize(np.ones(64, np.float32), "int8")
    for mask in (0o022, 0o077, 0o002):
        old = os.umask(mask)
        try:
            p = tmp_path / f"m{mask:o}.safetensors"
            quant.save(p, {"w": q})
            assert (os.stat(p).st_mode & 0o777) == 0o666 & ~mask
            quant.save(p, {"w": q})  # replacing keeps the rule
            assert (os.stat(p).st_mode & 0o777) == 0o666 & ~mask
        finally:
            os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["m2.safetensors", "m22.safetensors", "m77.safetensors"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    q = quant.quantize(np.ones(64, np.float32), "int8")
    p = tmp_path / "w.safetensors"
    quant.save(p, {"w": q})
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        quant.save(p, {"w": q, "v": q})
    assert os.listdir(tmp_path) == ["w.safetensors"] and p.read_bytes() == before
