"""``thrifty prune`` inputs: every malformed .npy or parquet file is one line, exit 2,
and the readers raise thrifty.FormatError / InvalidInputError (never numpy's or
pyarrow's own exceptions); float64 is converted, and said so."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

import thrifty
from thrifty import prune
from thrifty.cli import main
from thrifty.cli._io import _read_parquet, read_embeddings

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_exit_2(capsys, tmp_path, path, *extra):
    out = tmp_path / "kept.npy"
    rc, _, e = _run(capsys, "prune", path, "--method", "random", "-o", out, *extra)
    assert rc == 2, e
    assert len(e.strip().splitlines()) == 1 and e.startswith("thrifty prune: error: "), e
    assert "Traceback" not in e and not out.exists()
    return e


def _npy(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


def _hdr(shape: str, descr: str = "'<f4'") -> str:
    return "{'descr': %s, 'fortran_order': False, 'shape': %s, }\n" % (descr, shape)


@pytest.mark.parametrize("blob, fragment", [
    (b"\x93NUMPY\x01\x00\x40\x00{'descr'", "truncated"),
    (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), "), "malformed"),
    (_npy(_hdr("(-3, 2)")), "negative dimension"),
    (_npy(_hdr("(True, 2)")), "non-integer dimension"),
    (_npy(_hdr(f"({10**30}, 2)")), "too large"),
    (_npy(_hdr("(" * 20000 + ")" * 20000)), "malformed"),
    (_npy(_hdr("(2, 3)", "'|O'")), "pickles"),
    (_npy(_hdr("(2, 3)"), b"\x00" * 10), "truncated"),
    (_npy(_hdr("(0, 3)")), "empty"),
    (_npy(_hdr("(3, 0)")), "empty"),
    (_npy(_hdr("(6,)"), b"\x00" * 24), "one embedding per row"),
    (_npy(_hdr("(2, 3)", "'<i4'"), b"\x00" * 24), "dtype int32"),
])
def test_malformed_npy_is_one_line_exit_2(tmp_path, capsys, blob, fragment):
    p = tmp_path / "bad.npy"
    p.write_bytes(blob)
    e = _one_line_exit_2(capsys, tmp_path, p)
    assert fragment in e
    for leak in ("allow_pickle", "Errno", "literal_eval", "numpy.lib", "np.lib", "ValueError"):
        assert leak not in e


def test_unsupported_input_extension_names_the_formats(tmp_path, capsys):
    p = tmp_path / "emb.txt"
    p.write_text("1 2 3\n")
    e = _one_line_exit_2(capsys, tmp_path, p)
    assert ".npy or .parquet" in e and "allow_pickle" not in e


def _write_f64(tmp_path, x):
    p = tmp_path / "f64.npy"
    np.save(p, x)
    return p


def test_float64_npy_is_converted_and_said_so(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6))
    p = _write_f64(tmp_path, x)
    out = tmp_path / "kept.npy"
    rc, o, e = _run(capsys, "prune", p, "--method", "ssp", "--keep", 0.3, "--clusters", 4, "-o", out)
    assert rc == 0, e
    assert "thrifty prune: note:" in e and "float64" in e and "float32" in e
    ref = prune.ssp(x.astype(np.float32), keep_fraction=0.3, n_clusters=4, seed=0)
    np.testing.assert_array_equal(np.load(out), ref.indices)


def test_big_endian_and_fortran_order_read_like_numpy(tmp_path):
    x = np.random.default_rng(2).normal(size=(50, 5)).astype(">f4")
    for name, arr in (("be.npy", x), ("f.npy", np.asfortranarray(x.astype("<f4")))):
        p = tmp_path / name
        np.save(p, arr)
        got = read_embeddings(str(p)).x
        assert got.dtype == np.float32 and got.dtype.isnative and got.flags.c_contiguous
        np.testing.assert_array_equal(got, np.load(p).astype(np.float32))


def test_float64_beyond_float32_range_names_the_row(tmp_path, capsys):
    x = np.ones((20, 3))
    x[13, 2] = 1e39
    e = _one_line_exit_2(capsys, tmp_path, _write_f64(tmp_path, x))
    assert "row 13" in e and "float32 range" in e


def test_nan_in_float64_names_the_row(tmp_path, capsys):
    x = np.ones((20, 3))
    x[5, 0] = np.nan
    e = _one_line_exit_2(capsys, tmp_path, _write_f64(tmp_path, x))
    assert "row 5" in e and "NaN" in e


# ----------------------------------------------------------------------------- parquet

def _parquet(tmp_path, col, ids=None, name="emb.parquet", **kw):
    cols = {"embedding": col}
    if ids is not None:
        cols["id"] = ids
    p = tmp_path / name
    pq.write_table(pa.table(cols), p, **kw)
    return p


F32 = pa.list_(pa.float32())


@pytest.mark.parametrize("col, fragment", [
    (pa.array([[1.0] * 10, [1.0] * 12, [1.0] * 11], F32), "row 1 of column 'embedding' has 12 values but row 0 has 10"),
    (pa.array([[1.0, 2.0], [1.0, 2.0], [1.0]], F32), "row 2 of column 'embedding' has 1 value but"),
    (pa.array([[1.0, 2.0], None, [1.0, 2.0]], F32), "row 1 of column 'embedding' is null"),
    (pa.array([[], [], []], F32), "row 0 of column 'embedding' is an empty list"),
    (pa.array([[1.0, 2.0], [1.0, None]], F32), "row 1 of column 'embedding' holds a null value"),
    (pa.array([1, 2, 3], pa.int64()), "holds int64, not one list of floats per row"),
    (pa.array([[1, 2], [3, 4]], pa.list_(pa.int64())), "lists of int64"),
    (pa.array(["a", "b"]), "holds string"),
    (pa.array([], F32), "has no rows"),
    (pa.array([[1.0, 2.0], [3.0, float("nan")]], F32), "row 1 contains NaN"),
    (pa.array([[1.0, 2.0], [3.0, 1e300]], pa.list_(pa.float64())), "row 1 holds a value beyond the float32 range"),
])
def test_bad_parquet_columns_one_line_exit_2(tmp_path, capsys, col, fragment):
    e = _one_line_exit_2(capsys, tmp_path, _parquet(tmp_path, col))
    assert fragment in e
    for leak in ("pyarrow", "flatten", "Int64Array", "Traceback"):
        assert leak not in e


def test_ragged_rows_across_row_groups_name_the_global_row(tmp_path):
    good = pa.table({"embedding": pa.array([[1.0, 2.0]] * 3, F32)})
    bad = pa.table({"embedding": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], F32)})
    p = tmp_path / "rg.parquet"
    pq.write_table(pa.concat_tables([good, good, bad]), p, row_group_size=3)
    with pytest.raises(thrifty.FormatError, match="row 7 of column 'embedding' has 3 values"):
        read_embeddings(str(p))


@pytest.mark.parametrize("typ", [pa.list_(pa.float32()), pa.large_list(pa.float32()),
                                 pa.list_(pa.float32(), 4), pa.list_(pa.float16()),
                                 pa.list_(pa.float64())])
def test_list_types_read_like_numpy(tmp_path, typ):
    x = np.random.default_rng(3).normal(size=(30, 4))
    p = _parquet(tmp_path, pa.array(list(x), typ), row_group_size=7)
    emb = read_embeddings(str(p))
    want = x.astype(typ.value_type.to_pandas_dtype()).astype(emb.x.dtype)
    np.testing.assert_array_equal(emb.x, want)
    assert emb.x.shape == (30, 4)
    assert bool(emb.notes) == (typ.value_type == pa.float64())


def test_parquet_float64_through_the_cli_matches_the_api(tmp_path, capsys):
    x = np.random.default_rng(4).normal(size=(120, 5))
    p = _parquet(tmp_path, pa.array(list(x), pa.list_(pa.float64())))
    out = tmp_path / "kept.npy"
    rc, _, e = _run(capsys, "prune", p, "--method", "ssp", "--keep", 0.5, "--clusters", 3, "-o", out)
    assert rc == 0, e
    assert "note:" in e and "float64" in e
    ref = prune.ssp(x.astype(np.float32), keep_fraction=0.5, n_clusters=3, seed=0)
    np.testing.assert_array_equal(np.load(out), ref.indices)


@pytest.mark.parametrize("ids, fragment", [
    (pa.array(["a", None, "c"]), "row 1 of id column 'id' is null"),
    (pa.array(["a", "b\nc", "d"]), "row 1 of id column 'id' contains a line break"),
    (pa.array([1.5, 2.5, 3.5]), "id column 'id' holds double"),
    (pa.array([[1], [2], [3]]), "id column 'id' holds list"),
])
def test_bad_id_columns(tmp_path, capsys, ids, fragment):
    p = _parquet(tmp_path, pa.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]], F32), ids)
    out = tmp_path / "kept.txt"
    rc, _, e = _run(capsys, "prune", p, "--method", "random", "--id-column", "id", "-o", out)
    assert rc == 2 and fragment in e and len(e.strip().splitlines()) == 1, e
    assert not out.exists()


def test_integer_ids(tmp_path, capsys):
    x = np.random.default_rng(5).normal(size=(40, 3)).astype(np.float32)
    ids = pa.array(np.arange(1000, 1040, dtype=np.int64))
    p = _parquet(tmp_path, pa.array(list(x), F32), ids)
    out = tmp_path / "kept.txt"
    rc, _, e = _run(capsys, "prune", p, "--method", "random", "--keep", 0.5, "--id-column", "id",
                    "-o", out)
    assert rc == 0, e
    ref = prune.random_subset(40, keep_fraction=0.5, seed=0).indices
    assert out.read_text().split() == [str(1000 + i) for i in ref]


def test_column_options_with_npy_input_are_refused(tmp_path, capsys):
    p = tmp_path / "x.npy"
    np.save(p, np.ones((5, 2), np.float32))
    for opt in ("--column", "--id-column"):
        e = _one_line_exit_2(capsys, tmp_path, p, opt, "emb")
        assert f"{opt} applies to parquet input only" in e or "--id-column writes" in e


def test_without_pyarrow_says_how_to_install(tmp_path):
    (tmp_path / "pyarrow").mkdir()
    (tmp_path / "pyarrow" / "__init__.py").write_text("raise ImportError('no pyarrow')\n")
    p = _parquet(tmp_path, pa.array([[1.0, 2.0]] * 4, F32))
    r = subprocess.run([sys.executable, "-m", "thrifty", "prune", str(p), "-o", str(tmp_path / "k.npy")],
                       capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ,
                            "PYTHONPATH": f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}"})
    assert r.returncode == 2 and "pip install pyarrow" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_parquet_byte_flipping_fuzz():
    """Thousands of corrupted parquet files: each is read, or refused with a thrifty error."""
    rng = random.Random(99)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    table = pa.table({"embedding": pa.array(list(x), F32), "id": [f"r{i}" for i in range(6)]})
    seeds = []
    for kw in ({}, {"compression": "none"}, {"use_dictionary": False}, {"data_page_version": "2.0"}):
        b = io.BytesIO()
        pq.write_table(table, b, **kw)
        seeds.append(b.getvalue())
    seen = {}
    for _ in range(3000):
        b = bytearray(rng.choice(seeds))
        op = rng.random()
        if op < 0.6:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(4, len(b) * 2 // 3) if rng.random() < 0.7 else rng.randrange(len(b))
                b[at] = rng.randrange(256)
        elif op < 0.8:
            del b[rng.randrange(len(b)):]
        else:
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            emb = _read_parquet("fuzz.parquet", "embedding", rng.choice([None, "id"]),
                                source=io.BytesIO(bytes(b)))
        except (thrifty.FormatError, thrifty.InvalidInputError) as e:
            assert "\n" not in str(e)
            seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1
            continue
        assert emb.x.ndim == 2 and emb.x.size <= 4 * len(b) and np.isfinite(emb.x).all()
        seen["ok"] = seen.get("ok", 0) + 1
    assert seen.get("FormatError", 0) > 1000 and seen.get("ok", 0) > 10


def test_npy_byte_flipping_fuzz_through_the_cli_reader(tmp_path):
    """Mutated .npy files through the whole reader (header, dtype, shape, conversion):
    each is read as a finite float matrix, or refused with a thrifty error."""
    rng = random.Random(7)
    seeds = []
    for a in (np.ones((4, 3), np.float32), np.arange(6, dtype=">f8").reshape(3, 2),
              np.ones((2, 5), np.float16)):
        b = io.BytesIO()
        np.save(b, a)
        seeds.append(b.getvalue())
    p = tmp_path / "fuzz.npy"
    ok = 0
    for _ in range(400):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.3:
            del b[rng.randrange(len(b)):]
        p.write_bytes(bytes(b))
        try:
            x = read_embeddings(str(p)).x
        except (thrifty.FormatError, thrifty.InvalidInputError) as e:
            assert "\n" not in str(e)
            continue
        ok += 1
        assert x.ndim == 2 and x.size and x.dtype in (np.float32, np.float16)
        assert np.isfinite(x).all()
    assert ok > 20
