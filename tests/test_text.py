"""thrifty.text against Python's gzip/bz2/lzma and plain-Python reference formulas."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import thrifty
from thrifty.text import CompressionKNNClassifier, compressed_len, ncd_matrix

WORDS = (
    "the cat sat on a mat while stocks fell and the market rose after the team won "
    "its game in heavy rain under grey clouds la maison est rouge der Hund bellt"
).split()


def make_texts(n: int, seed: int, lo: int = 5, hi: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def random_bytes(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1, 3000)) for _ in range(n)]


def ref_len(t: str | bytes, compressor: str = "gzip", level: int | None = None) -> int:
    b = t.encode("utf-8") if isinstance(t, str) else t
    if compressor == "gzip":
        return len(gzip.compress(b, 9 if level is None else level))
    if compressor == "bz2":
        return len(bz2.compress(b, 9 if level is None else level))
    if compressor == "lzma":
        return len(lzma.compress(b, preset=level))
    raise AssertionError(compressor)


def ref_distance(cx: int, cy: int, cxy: int, distance: str) -> float:
    if distance == "ncd":
        return (cxy - min(cx, cy)) / max(cx, cy)
    if distance == "cdm":
        return cxy / (cx + cy)
    return 1 - (cx + cy - cxy) / cxy


def ref_matrix(queries, refs, distance="ncd", level=None) -> np.ndarray:
    enc = [q.encode() if isinstance(q, str) else q for q in queries]
    renc = [r.encode() if isinstance(r, str) else r for r in refs]
    cq = [ref_len(q, level=level) for q in enc]
    cr = [ref_len(r, level=level) for r in renc]
    return np.array(
        [
            [ref_distance(cq[i], cr[j], ref_len(q + b" " + r, level=level), distance)
             for j, r in enumerate(renc)]
            for i, q in enumerate(enc)
        ]
    )


# -- compressed_len ----------------------------------------------------------------------

@pytest.mark.parametrize("level", range(0, 10))
def test_gzip_lengths_equal_python_gzip_every_level(level):
    texts = [t.encode() for t in make_texts(80, level)] + random_bytes(20, level)
    texts += [b"a", b"a" * 70_000]
    got = compressed_len(texts, level=level)
    assert got.dtype == np.int64
    assert got.tolist() == [ref_len(t, level=level) for t in texts]


def test_reused_stream_ignores_stale_window_bytes():
    # A long text leaves its bytes in the reused zlib window; a shorter text that ends
    # where two earlier matches diverge ('Q' far, 'R' near) must still pick the same
    # match as a fresh stream (Python's gzip), whatever lies beyond its end.
    filler = "".join(chr(97 + (i * 7) % 26) for i in range(200))
    short = f"hello world Q{filler}hello world R{filler[::-1]}hello world".encode()
    texts = []
    for tail in (b"Q" * 400, b"R" * 400, b"\x00" * 400, b" world Q" * 50):
        texts += [short + tail, short, short[:-3], short + b" "]
    got = compressed_len(texts)
    assert got.tolist() == [ref_len(t) for t in texts]
    assert len(set(got[1::4].tolist())) == 1


@pytest.mark.parametrize("level", [8, 9])
def test_gzip_adversarial_lengths_equal_python_gzip(level):
    # Level 9 goes through the length-only deflate, level 8 through zlib: both must give
    # Python's lengths on repetitive, hash-colliding and far-repeat inputs of many sizes.
    rng = random.Random(level)
    texts: list[bytes] = []
    for n in [*range(240, 270), *range(750, 780), *range(1015, 1035), 1, 2, 3, 500]:
        texts.append(bytes(rng.choice(b"ab") for _ in range(n)))
        texts.append(bytes(0x15 if rng.random() < 0.05 else 0x05 for _ in range(n)))
        blk = rng.randbytes(min(40, n // 3))
        fill = bytes(97 + rng.randrange(16) for _ in range(max(0, n - 2 * len(blk))))
        texts.append(blk + fill + blk)
        words = " ".join(rng.choice(WORDS) for _ in range(n // 3 + 1)).encode()[:n]
        texts.append(words)
    got = compressed_len(texts, level=level)
    assert got.tolist() == [ref_len(t, level=level) for t in texts]


def _long_sample(rng: random.Random, n: int) -> bytes:
    """Text, random bytes, runs or a mixture: literal-only blocks (one symbol per byte,
    so a block ends exactly at zlib's 16383-symbol limit, often stored), long matches,
    and matches across zlib's window slides."""
    kind = rng.randrange(5)
    if kind == 0:
        return " ".join(rng.choice(WORDS) for _ in range(n // 3 + 1)).encode()[:n]
    if kind == 1:
        return rng.randbytes(n)
    if kind == 2:
        period = rng.randint(1, 400)
        blk = bytes(97 + rng.randrange(4) for _ in range(period))
        return (blk * (n // period + 1))[:n]
    if kind == 3:
        cut = rng.randrange(n)
        return rng.randbytes(cut) + bytes(rng.choice(b"ab") for _ in range(n - cut))
    cut = rng.randrange(n)
    text = " ".join(rng.choice(WORDS) for _ in range(cut // 3 + 1)).encode()[:cut]
    return text + rng.randbytes(n - cut)


def test_gzip_multi_block_lengths_fuzz():
    # Past 16382 bytes the length-only deflate emits several blocks and slides the
    # window like zlib: random lengths around the block limit (16383 symbols), the
    # distance limit MAX_DIST (32506) and the first slides (65274, 98042), then
    # anything up to 200 KB, each equal to Python's gzip.
    rng = random.Random(16383)
    centres = [16_382, 16_383, 16_384, 32_506, 32_768, 65_274, 65_536, 98_042]
    texts = [_long_sample(rng, c + rng.randint(-6, 6)) for c in centres for _ in range(3)]
    texts += [_long_sample(rng, rng.randint(16_383, 200_000)) for _ in range(12)]
    got = compressed_len(texts)
    assert got.tolist() == [ref_len(t) for t in texts]


def test_gzip_random_pairs_equal_python_gzip():
    # Joint texts ``query + b" " + ref`` of every size class (short pairs share the
    # query's parse in one block; long ones resume its multi-block parse), pair by pair.
    rng = random.Random(7)
    sizes = [(20, 400), (200, 2_000), (3_000, 9_000), (15_000, 17_000), (30_000, 70_000)]
    queries, refs = [], []
    for lo, hi in sizes:
        queries.append(_long_sample(rng, rng.randint(lo, hi)))
        refs += [_long_sample(rng, rng.randint(lo, hi)) for _ in range(3)]
    got = ncd_matrix(queries, refs)
    assert np.array_equal(got, ref_matrix(queries, refs))


def test_gzip_default_level_is_9_and_utf8():
    texts = ["héllo wörld ✓ 中文", "ascii only", "bytes é".encode()]
    assert compressed_len(texts).tolist() == [ref_len(t, level=9) for t in texts]


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=8),
                 st.lists(_TEXT, min_size=1, max_size=8)),
       st.integers(1, 9))
def test_gzip_lengths_property(texts, level):
    assert compressed_len(texts, level=level).tolist() == [ref_len(t, level=level) for t in texts]


@pytest.mark.parametrize("compressor", ["bz2", "lzma"])
def test_bz2_lzma_equal_python_defaults(compressor):
    texts = [t.encode() for t in make_texts(15, 7, hi=400)] + random_bytes(5, 8)
    assert compressed_len(texts, compressor=compressor).tolist() == [
        ref_len(t, compressor) for t in texts
    ]


@pytest.mark.parametrize(("compressor", "level"), [("bz2", 1), ("lzma", 0), ("lzma", 9)])
def test_bz2_lzma_levels(compressor, level):
    texts = make_texts(6, 9, hi=300)
    assert compressed_len(texts, compressor=compressor, level=level).tolist() == [
        ref_len(t, compressor, level) for t in texts
    ]


def test_zstd_is_deterministic_across_threads_and_runs():
    texts = make_texts(300, 3)
    thrifty.set_num_threads(1)
    a = compressed_len(texts, compressor="zstd")
    thrifty.set_num_threads(2)
    b = compressed_len(texts, compressor="zstd")
    c = compressed_len(list(reversed(texts)), compressor="zstd")[::-1]
    assert a.tolist() == b.tolist() == c.tolist()
    # zstd level 3 compresses a long repetitive text far below its size.
    assert compressed_len(["abc " * 1000], compressor="zstd")[0] < 100


def test_progress_callback_receives_totals():
    seen = []
    compressed_len(make_texts(200, 1), progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (200, 200)


# -- ncd_matrix ------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["ncd", "cdm", "clm"])
def test_ncd_matrix_bit_equal_to_python_reference(distance):
    queries = make_texts(6, 11)
    refs = make_texts(9, 12) + [b"bytes reference \xc3\xa9"]
    got = ncd_matrix(queries, refs, distance=distance)
    assert got.shape == (6, 10) and got.dtype == np.float64
    want = ref_matrix(queries, refs, distance)
    assert np.array_equal(got, want)  # bit for bit


def test_ncd_matrix_level_and_query_first():
    q, r = ["alpha beta gamma"], ["gamma delta " * 20]
    assert np.array_equal(ncd_matrix(q, r, level=1), ref_matrix(q, r, level=1))
    # Not symmetric in general: the joint text is query + " " + ref.
    qs = make_texts(5, 21)
    d = ncd_matrix(qs, qs)
    assert not np.array_equal(d, d.T)


def test_ncd_matrix_zstd_uses_zstd_lengths():
    q, r = make_texts(3, 4), make_texts(4, 5)
    got = ncd_matrix(q, r, compressor="zstd", distance="cdm")
    cq = compressed_len(q, compressor="zstd")
    cr = compressed_len(r, compressor="zstd")
    cqr = compressed_len([a + " " + b for a in q for b in r], compressor="zstd").reshape(3, 4)
    want = np.array([[ref_distance(int(cq[i]), int(cr[j]), int(cqr[i, j]), "cdm")
                      for j in range(4)] for i in range(3)])
    assert np.array_equal(got, want)


def test_ncd_matrix_independent_of_threads():
    q, r = make_texts(7, 31), make_texts(300, 32)
    thrifty.set_num_threads(1)
    a = ncd_matrix(q, r)
    thrifty.set_num_threads(3)
    assert np.array_equal(a, ncd_matrix(q, r))


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: compressed_len([]), "empty"),
        (lambda: compressed_len(["ok", ""]), r"texts\[1\] is an empty text"),
        (lambda: compressed_len("a string"), "sequence of texts"),
        (lambda: compressed_len(None), "sequence of texts"),
        (lambda: compressed_len(["a", 3]), r"texts\[1\] is a int"),
        (lambda: compressed_len(["a"], compressor="brotli"), "unknown compressor"),
        (lambda: compressed_len(["a"], level=10), "level 10"),
        (lambda: compressed_len(["a"], compressor="bz2", level=0), "level 0"),
        (lambda: compressed_len(["a"], level=2.5), "level must be an integer"),
        (lambda: compressed_len(["a", b"\xff\xfe"]), r"texts\[1\].*not valid UTF-8"),
        (lambda: compressed_len(["\ud800"]), "UTF-8"),
        (lambda: compressed_len(np.array([["a"]])), "1-D"),
        (lambda: ncd_matrix(["a"], []), "refs is empty"),
        (lambda: ncd_matrix(["a"], ["b"], distance="cosine"), "distance must be one of"),
        (lambda: ncd_matrix(["a"], [b"\xff"]), r"refs\[0\].*not valid UTF-8"),
    ],
)
def test_bad_input_raises_invalid_input(call, match):
    with pytest.raises(thrifty.InvalidInputError, match=match):
        call()


def test_pure_bytes_need_not_be_utf8():
    assert compressed_len([b"\xff\xfe", b"\x00"]).tolist() == [
        ref_len(b"\xff\xfe"), ref_len(b"\x00")
    ]
