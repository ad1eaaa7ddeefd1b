"""A strict reader for ``.npy`` headers, safe on untrusted files.

``numpy.load`` parses the header with :func:`ast.literal_eval` and trusts what it finds:
a deeply nested header raises ``RecursionError``, a negative, boolean or 10**30 shape
raises ``ValueError``/``OverflowError``/``TypeError`` (or is accepted), and a short
header surfaces as an ``EOFError``. :func:`read_header` instead parses the one dict
``numpy.save`` writes with a small non-recursive parser, checks every field and the file
size against the shape, and raises :class:`thrifty.FormatError` for anything else. It
never reads more than the header, so a hostile length field cannot make it allocate
more than the file holds.
"""

from __future__ import annotations

import os
import re
import sys
from typing import BinaryIO, NamedTuple

import numpy as np

from ._errors import FormatError

__all__ = ["NpyHeader", "read_header", "open_npy", "MAX_HEADER_BYTES"]

MAGIC = b"\x93NUMPY"
#: Longest header accepted. ``numpy.save`` writes about 128 bytes for any real array.
MAX_HEADER_BYTES = 1 << 16
#: Most dimensions accepted (numpy 2's own limit).
MAX_DIMS = 64

_DESCR = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,3}")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'[^'\\]*'|"[^"\\]*")
      | (?P<int>-?[0-9]+)L?
      | (?P<name>[A-Za-z_]+)
      | (?P<punct>[{}()\[\]:,])
    )""",
    re.VERBOSE,
)


class NpyHeader(NamedTuple):
    """What a ``.npy`` header declares."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int
    """Byte offset of the data."""


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    end = len(text.rstrip(" \t\r\n\x00"))
    while pos < end:
        m = _TOKEN.match(text, pos, end)
        if m is None or m.end() == pos:
            raise FormatError(f"{where}: malformed .npy header (unexpected "
                              f"{text[pos:pos + 1]!r} at byte {pos})")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parse_dict(text: str, where: str) -> dict[str, object]:
    """Parse ``{'descr': str, 'fortran_order': bool, 'shape': (int, ...)}``.

    Only a flat dict of strings, booleans and one tuple of integers is accepted, so
    nesting cannot recurse; anything else is a :class:`FormatError`.
    """
    toks = _tokens(text, where)
    bad = FormatError(f"{where}: malformed .npy header (expected the dict numpy.save writes)")
    i = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind or (value is not None and toks[i][1] != value):
            raise bad
        i += 1
        return toks[i - 1][1]

    def peek(value: str) -> bool:
        return i < len(toks) and toks[i] == ("punct", value)

    out: dict[str, object] = {}
    take("punct", "{")
    while not peek("}"):
        key = take("str")[1:-1]
        take("punct", ":")
        if key in out:
            raise FormatError(f"{where}: malformed .npy header (key {key!r} appears twice)")
        if i >= len(toks):
            raise bad
        kind, tok = toks[i]
        if kind == "str":
            i += 1
            out[key] = tok[1:-1]
        elif kind == "name" and tok in ("True", "False"):
            i += 1
            out[key] = tok == "True"
        elif (kind, tok) == ("punct", "("):
            i += 1
            dims: list[int | bool] = []
            while not peek(")"):
                if i < len(toks) and toks[i][0] == "name" and toks[i][1] in ("True", "False"):
                    i += 1
                    dims.append(True)  # recorded as a bool so that the shape check names it
                else:
                    dims.append(int(take("int")))
                if len(dims) > MAX_DIMS:
                    raise FormatError(f"{where}: .npy header declares more than {MAX_DIMS} dimensions")
                if not peek(")"):
                    take("punct", ",")
                elif len(dims) == 1 and toks[i - 1] != ("punct", ","):
                    raise bad  # "(3)" is the integer 3, not a tuple
            take("punct", ")")
            out[key] = tuple(dims)
        elif (kind, tok) == ("punct", "[") and key == "descr":
            raise FormatError(f"{where}: .npy file holds a structured dtype; "
                              "only plain numeric arrays are supported")
        else:
            raise bad
        if not peek("}"):
            take("punct", ",")
    take("punct", "}")
    if i != len(toks):
        raise bad
    return out


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def read_header(path: str | os.PathLike[str] | BinaryIO) -> NpyHeader:
    """Read and check the header of the ``.npy`` file at ``path``.

    ``path`` may also be a seekable binary file object, read from its start. Returns the
    dtype, shape, memory order and data offset. The file must be at least as long as
    the header says (header plus ``prod(shape) * itemsize`` bytes).

    Raises
    ------
    thrifty.FormatError
        Not a ``.npy`` file, an unsupported version, a truncated, over-long or malformed
        header, a structured or object dtype, a negative, boolean or too large
        dimension, or a file shorter than its shape needs.
    OSError
        The file can not be opened or read.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((3, 2), np.float32))
    >>> h = read_header(path)
    >>> h.dtype, h.shape, h.fortran_order, h.offset
    (dtype('float32'), (3, 2), False, 128)
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        f = path
        where = str(getattr(f, "name", "<file>"))
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        return _read_header(f, size, where)
    where = os.fsdecode(path)
    with open(path, "rb") as f:
        return _read_header(f, os.fstat(f.fileno()).st_size, where)


def _read_header(f: BinaryIO, size: int, where: str) -> NpyHeader:
    head = _read_exact(f, 8)
    if len(head) < 8 or head[:6] != MAGIC:
        raise FormatError(f"{where}: not a .npy file (it does not start with the .npy magic bytes)")
    major, minor = head[6], head[7]
    if major not in (1, 2, 3) or minor != 0:
        raise FormatError(f"{where}: unsupported .npy format version {major}.{minor}")
    width = 2 if major == 1 else 4
    raw_len = _read_exact(f, width)
    if len(raw_len) < width:
        raise FormatError(f"{where}: truncated .npy file (it ends inside the header)")
    hlen = int.from_bytes(raw_len, "little")
    start = 8 + width
    if hlen > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: .npy header of {hlen} bytes is longer than "
                          f"the {MAX_HEADER_BYTES} accepted")
    if start + hlen > size:
        raise FormatError(f"{where}: truncated .npy file (it ends inside the header)")
    raw = _read_exact(f, hlen)
    if len(raw) < hlen:
        raise FormatError(f"{where}: truncated .npy file (it ends inside the header)")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: .npy header is not valid UTF-8") from None
    fields = _parse_dict(text, where)
    if set(fields) != {"descr", "fortran_order", "shape"}:
        raise FormatError(f"{where}: malformed .npy header (keys {sorted(fields)}; expected "
                          "descr, fortran_order and shape)")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(fortran, bool):
        raise FormatError(f"{where}: malformed .npy header (fortran_order is not True or False)")
    if not isinstance(shape, tuple):
        raise FormatError(f"{where}: malformed .npy header (shape is not a tuple)")
    for s in shape:
        if isinstance(s, bool):
            raise FormatError(f"{where}: .npy header declares a non-integer dimension")
        if s < 0:
            raise FormatError(f"{where}: .npy header declares a negative dimension {s}")
        if s > sys.maxsize:
            raise FormatError(f"{where}: .npy header declares dimension {s}, too large for this platform")
    if not isinstance(descr, str) or not _DESCR.fullmatch(descr):
        raise FormatError(f"{where}: .npy header declares unsupported dtype {descr!r}")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: .npy header declares unknown dtype {descr!r}") from None
    if dtype.hasobject:
        raise FormatError(f"{where}: .npy file holds Python objects (pickles), which are never loaded")
    if dtype.itemsize == 0:
        raise FormatError(f"{where}: .npy header declares dtype {descr!r} of zero size")
    offset = start + hlen
    n_items = nonzero = 1
    for s in shape:
        n_items *= s
        nonzero *= max(s, 1)
    if nonzero * dtype.itemsize > sys.maxsize:
        raise FormatError(f"{where}: .npy header declares shape {shape}, too large for this "
                          "platform")
    need = n_items * dtype.itemsize
    if need > size - offset:
        raise FormatError(
            f"{where}: truncated .npy file: its header declares shape {shape} of {dtype} "
            f"({need} data bytes) but only {size - offset} follow the header"
        )
    return NpyHeader(dtype, tuple(int(s) for s in shape), fortran, offset)


def open_npy(path: str | os.PathLike[str]) -> tuple[np.ndarray, NpyHeader]:
    """Memory-map the ``.npy`` file at ``path`` read-only, after :func:`read_header`.

    Zero-size arrays are returned as ordinary empty arrays (they can not be mapped).
    """
    h = read_header(path)
    if 0 in h.shape:
        return np.zeros(h.shape, dtype=h.dtype), h
    x = np.memmap(path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
                  order="F" if h.fortran_order else "C")
    return x, h
