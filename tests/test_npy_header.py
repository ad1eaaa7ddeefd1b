"""The strict ``.npy`` header reader (thrifty._npy): agrees with numpy on every file
numpy writes, and raises thrifty.FormatError (nothing else) on every malformed one."""

from __future__ import annotations

import io
import random
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import thrifty
from thrifty._npy import MAX_HEADER_BYTES, open_npy, read_header


def _npy(header: str | bytes, data: bytes = b"", version: int = 1) -> bytes:
    raw = header.encode("latin-1") if isinstance(header, str) else header
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(raw)) + raw + data


def _hdr(descr="'<f4'", fortran="False", shape="(2, 3)") -> str:
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }\n" % (descr, fortran, shape)


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<f2", "|u1", "<i8", "|b1", "<c16", "<U5"])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 0, 5), (1, 1, 1, 2)])
@pytest.mark.parametrize("fortran", [False, True])
def test_agrees_with_numpy(tmp_path, dtype, shape, fortran):
    a = np.zeros(shape, dtype)
    if fortran:
        a = np.asfortranarray(a)
    p = tmp_path / "a.npy"
    np.save(p, a)
    h = read_header(p)
    with open(p, "rb") as f:
        version = np.lib.format.read_magic(f)
        ref_shape, ref_fortran, ref_dtype = (
            np.lib.format.read_array_header_1_0(f) if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f))
        offset = f.tell()
    assert (h.dtype, h.shape, h.fortran_order, h.offset) == (ref_dtype, ref_shape, ref_fortran, offset)
    x, _ = open_npy(p)
    np.testing.assert_array_equal(x, np.load(p))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_versions_and_python2_long_ints(tmp_path, version):
    data = np.arange(6, dtype="<f4").tobytes()
    p = tmp_path / "v.npy"
    p.write_bytes(_npy(_hdr(shape="(2L, 3L)"), data, version))
    h = read_header(p)
    assert h.shape == (2, 3) and h.dtype == np.float32
    x, _ = open_npy(p)
    np.testing.assert_array_equal(x, np.arange(6, dtype=np.float32).reshape(2, 3))


_BAD = {
    "empty file": (b"", "not a .npy file"),
    "magic only": (b"\x93NUMPY", "not a .npy file"),
    "short length field": (b"\x93NUMPY\x01\x00\x10", "truncated"),
    "short header": (b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4'", "truncated"),
    "unterminated header": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), "),
                            "malformed"),
    "unterminated string": (_npy("{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3)}"),
                            "malformed"),
    "version 4": (b"\x93NUMPY\x04\x00" + b"\x00" * 8, "version 4.0"),
    "negative shape": (_npy(_hdr(shape="(-3, 2)")), "negative dimension -3"),
    "boolean shape": (_npy(_hdr(shape="(True, 2)")), "non-integer dimension"),
    "huge shape": (_npy(_hdr(shape=f"({10**30}, 2)")), "too large"),
    "huge shape times zero": (_npy(_hdr(shape=f"({10**30}, 0)")), "too large"),
    "huge product": (_npy(_hdr(shape=f"({2**40}, {2**40})")), "too large"),
    "product beyond the file": (_npy(_hdr(shape=f"({2**20}, {2**20})")), "truncated"),
    "float shape": (_npy(_hdr(shape="(2.5, 2)")), "malformed"),
    "shape as list": (_npy(_hdr(shape="[2, 3]")), "malformed"),
    "shape as int": (_npy(_hdr(shape="6")), "malformed"),
    "shape as parenthesised int": (_npy(_hdr(shape="(6)")), "malformed"),
    "zero-size dtype": (_npy(_hdr(descr="'|S0'", shape="(0,)")), "zero size"),
    "huge shape with a zero": (_npy(_hdr(shape=f"(0, {2**62}, 90)")), "too large"),
    "shape as string": (_npy(_hdr(shape="'6'")), "shape is not a tuple"),
    "too many dims": (_npy(_hdr(shape="(" + "1, " * 70 + ")")), "more than 64 dimensions"),
    "nested tuples": (_npy(_hdr(shape="(" * 30000 + ")" * 30000)), "malformed"),
    "nested dicts": (_npy("{'a': " * 5000 + "1" + "}" * 5000), "malformed"),
    "nested lists": (_npy(_hdr(descr="[" * 5000 + "]" * 5000)), "structured dtype"),
    "missing key": (_npy("{'descr': '<f4', 'shape': (2, 3)}"), "keys"),
    "extra key": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 'y'}"),
                  "keys"),
    "duplicate key": (_npy("{'descr': '<f4', 'descr': '<f4', 'shape': (2, 3)}"), "twice"),
    "fortran not bool": (_npy(_hdr(fortran="'no'")), "fortran_order"),
    "object dtype": (_npy(_hdr(descr="'|O'")), "pickles"),
    "unknown dtype": (_npy(_hdr(descr="'<q7'")), "unknown dtype"),
    "dtype not a string": (_npy(_hdr(descr="True")), "unsupported dtype"),
    "code in header": (_npy(_hdr(descr="__import__('os')")), "malformed"),
    "truncated data": (_npy(_hdr(), b"\x00" * 23), "truncated .npy file"),
    "header too long": (b"\x93NUMPY\x02\x00" + struct.pack("<I", MAX_HEADER_BYTES + 1)
                        + b" " * (MAX_HEADER_BYTES + 1), "longer than"),
    "length beyond the file": (b"\x93NUMPY\x02\x00\x00\x10\x00\x00{}", "truncated"),
    "bad utf-8 in v3": (_npy(b"{'descr': '\xff'}", version=3), "UTF-8"),
    "nul bytes": (_npy(_hdr().replace(" ", "\x00")), "malformed"),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_malformed_headers_raise_format_error(tmp_path, case):
    blob, fragment = _BAD[case]
    p = tmp_path / "bad.npy"
    p.write_bytes(blob)
    with pytest.raises(thrifty.FormatError) as e:
        read_header(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and fragment in msg[len(str(p)):] and "\n" not in msg
    with pytest.raises(thrifty.FormatError) as e:
        read_header(io.BytesIO(blob))
    assert fragment in str(e.value)


def _check_one(blob: bytes, path) -> None:
    """Read ``blob``; anything but success or FormatError fails the test. On success the
    declared data must be present, and mappable once written to ``path``."""
    try:
        h = read_header(io.BytesIO(blob))
    except thrifty.FormatError:
        return
    assert all(isinstance(s, int) and 0 <= s for s in h.shape)
    n = int(np.prod(h.shape, dtype=object)) if h.shape else 1
    assert h.offset + n * h.dtype.itemsize <= len(blob)
    path.write_bytes(blob)
    assert read_header(path) == h
    x, _ = open_npy(path)
    assert x.shape == h.shape and x.dtype == h.dtype


def test_byte_flipping_fuzz(tmp_path):
    """A few thousand mutations of real .npy files: flips, truncations, insertions."""
    rng = random.Random(1234)
    seeds = []
    for i, a in enumerate([np.ones((3, 4), np.float32), np.arange(5, dtype=">f8"),
                           np.zeros((2, 0), np.float16), np.ones((), np.int8)]):
        p = tmp_path / f"seed{i}.npy"
        np.save(p, a)
        seeds.append(p.read_bytes())
    p = tmp_path / "fuzz.npy"
    t0 = time.perf_counter()
    n = 0
    while n < 4000:
        b = bytearray(rng.choice(seeds))
        op = rng.random()
        head = min(len(b), 140)
        if op < 0.5:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(head)] = rng.randrange(256)
        elif op < 0.7:
            del b[rng.randrange(len(b) + 1):]
        elif op < 0.85:
            at = rng.randrange(10, head)
            b[at:at] = bytes(rng.choice(b"(){}[],:'0123456789-TrueFalse L") for _ in range(rng.randint(1, 8)))
        else:
            at = rng.randrange(10, head)
            b[at:at + rng.randint(1, 6)] = b""
        _check_one(bytes(b), p)
        n += 1
    assert time.perf_counter() - t0 < 30


@settings(max_examples=1000, deadline=None, database=None)
@given(st.one_of(
    st.text(alphabet="{}()[],:'\" 0123456789-LTrueFalsedescrshapefortran_order<f4|\n", max_size=120),
    st.binary(max_size=120),
    st.builds(lambda d, f, s: _hdr(d, f, s),
              st.sampled_from(["'<f4'", "'>i2'", "'|b1'", "'<U3'", "'|V4'", "'f4'", "'<f'", "1"]),
              st.sampled_from(["False", "True", "0", "'x'"]),
              st.lists(st.integers(-3, 2**64), max_size=4).map(lambda s: "(" + ", ".join(map(str, s)) + ",)")),
), st.integers(0, 64), st.sampled_from([1, 2, 3]))
def test_arbitrary_headers_fuzz(tmp_path_factory, header, n_data, version):
    _check_one(_npy(header, b"\x00" * n_data, version), tmp_path_factory.getbasetemp() / "h.npy")


@pytest.mark.parametrize("case", sorted(_BAD))
def test_array_loader_header_reader_raises_format_error_too(tmp_path, case):
    """thrifty.data.read_npy_header (ArrayLoader's reader) shares the strict parser."""
    from thrifty.data import read_npy_header

    blob, fragment = _BAD[case]
    p = tmp_path / "bad.npy"
    p.write_bytes(blob)
    with pytest.raises(thrifty.FormatError) as e:
        read_npy_header(p)
    assert fragment in str(e.value)[len(str(p)):]
