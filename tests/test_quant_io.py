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
        quant.save(p, {"a": tensors["layer.int8"], "b": np.zeros(3)})
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
        quant.save(p, {"a": np.zeros(3)})
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
