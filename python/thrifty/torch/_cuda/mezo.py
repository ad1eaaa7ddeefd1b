"""MeZO's in-place perturbation and update from a counter-based generator.

The noise ``z`` of element ``i`` of tensor ``tensor_id`` at MeZO step ``step`` of a run
seeded ``seed`` is a pure function of those four numbers (Philox4x32-10 and Box-Muller,
see :func:`normal`), so the optimizer never stores it: every phase regenerates it. On
CUDA tensors (with CuPy) one kernel per tensor and phase does the work without
allocating anything; elsewhere a chunked numpy implementation of the same arithmetic
runs (at most ``2**20`` elements of temporaries at a time). Both produce the same bits
(``z`` is computed in float64 and rounded once to float32, so the two agree unless the
float64 ``log``/``sincos`` of the two libraries straddle a float32 rounding boundary:
about once in 10**8 elements, a one-ulp difference of that ``z``).

Exactness of the restore: ``x + d - 2d + d`` with ``d = fl(eps * z)`` gives back ``x``
only when the intermediate sums are exact. No copy-free scheme can do better for every
float: for a fixed ``d``, ``x -> fl(x + d)`` maps the ~2**30 floats of ``[-d/2, d/2]`` onto
the ~2**23 floats near ``d``, so that information is gone and no later arithmetic can
recover it (a saved copy or a side buffer is needed). thrifty therefore fuses the
restore into the update (one pass fewer) and makes every rounding deterministic: the
CPU fallback and the kernel give the same parameters, bit for bit, step after step.

Examples
--------
>>> import torch
>>> from thrifty.torch._cuda import mezo
>>> x = torch.zeros(6)
>>> mezo.perturb_([x], seed=1, step=0, eps=1.0, scale=1.0)
>>> torch.equal(x, torch.from_numpy(mezo.normal(6, seed=1, step=0)))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._errors import InvalidInputError
from ..._validation import check_int
from . import _runtime as _rt

__all__ = ["philox4x32_10", "normal", "perturb_", "update_"]

# Entry points of cuda/mezo.cu this module launches (checked by tests/cuda/test_cuda_compile.py).
_KERNELS = ("mezo_normal", "mezo_philox") + tuple(
    _rt.kernel_name(f"mezo_{op}", dt) for op in ("perturb", "update") for dt in ("float32", "float16", "bfloat16")
)

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_CHUNK_BLOCKS = 1 << 18  # 2**20 elements per fallback chunk
_MAX_GRID = 65535  # blocks of the grid-stride kernels
_MAX_ELEMENTS = 1 << 34  # the block index is one 32-bit counter word


def philox4x32_10(counter: Sequence[Any], key: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11) on arrays of 32-bit words.

    Parameters
    ----------
    counter : four array-likes of uint32 (broadcast together)
    key : two array-likes (or ints) of uint32

    Returns
    -------
    tuple of four uint32 arrays

    Examples
    --------
    >>> from thrifty.torch._cuda.mezo import philox4x32_10
    >>> [hex(int(w)) for w in philox4x32_10((0, 0, 0, 0), (0, 0))]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c = [np.asarray(w, dtype=np.uint64) & _MASK for w in counter]
    c = list(np.broadcast_arrays(*c))
    k0, k1 = (int(k) & 0xFFFFFFFF for k in key)
    for _ in range(10):
        p0 = _M0 * c[0]  # 32 x 32 -> 64 bits: exact in uint64
        p1 = _M1 * c[2]
        c = [(p1 >> _SHIFT) ^ c[1] ^ np.uint64(k0), p1 & _MASK, (p0 >> _SHIFT) ^ c[3] ^ np.uint64(k1), p0 & _MASK]
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return tuple(w.astype(np.uint32) for w in c)


def _check_key(seed: Any, step: Any, tensor_id: Any) -> tuple[int, int, int]:
    return (check_int(seed, "seed", low=0, high=(1 << 64) - 1),
            check_int(step, "step", low=0, high=(1 << 64) - 1),
            check_int(tensor_id, "tensor_id", low=0, high=(1 << 32) - 1))


def _normal_blocks(b0: int, b1: int, tensor_id: int, seed: int, step: int) -> np.ndarray:
    """The ``4 * (b1 - b0)`` normals of Philox blocks ``b0 .. b1 - 1`` (float32)."""
    blocks = np.arange(b0, b1, dtype=np.uint64)
    x = philox4x32_10(
        (blocks & _MASK, tensor_id, step & 0xFFFFFFFF, step >> 32), (seed & 0xFFFFFFFF, seed >> 32)
    )
    z = np.empty((b1 - b0, 4), dtype=np.float32)
    for j in range(2):
        u1 = (x[2 * j].astype(np.float64) + 1.0) * 2.0**-32
        u2 = x[2 * j + 1].astype(np.float64) * 2.0**-32
        r = np.sqrt(-2.0 * np.log(u1))
        t = 2.0 * np.pi * u2
        z[:, 2 * j] = r * np.cos(t)  # float64 -> float32: one round-to-nearest-even
        z[:, 2 * j + 1] = r * np.sin(t)
    return z.reshape(-1)


def normal(n: int, *, seed: int, step: int, tensor_id: int = 0) -> np.ndarray:
    """The first ``n`` standard normals of stream ``(seed, step, tensor_id)`` (float32).

    Element ``i`` uses Philox counter ``(i // 4, tensor_id, step % 2**32, step // 2**32)``
    with key ``(seed % 2**32, seed // 2**32)``; lanes ``(x0, x1)`` give elements
    ``4b, 4b+1`` and ``(x2, x3)`` elements ``4b+2, 4b+3`` by Box-Muller with
    ``u1 = (x_even + 1) / 2**32``, ``u2 = x_odd / 2**32``, ``r = sqrt(-2 log u1)``,
    ``z = (r cos 2 pi u2, r sin 2 pi u2)``, evaluated in float64, rounded to float32.

    Examples
    --------
    >>> from thrifty.torch._cuda.mezo import normal
    >>> z = normal(100_000, seed=0, step=0)
    >>> abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    True
    """
    seed, step, tensor_id = _check_key(seed, step, tensor_id)
    if n < 0 or n > _MAX_ELEMENTS:
        raise InvalidInputError(f"n must be in [0, 2**34], got {n}")
    return _normal_blocks(0, (n + 3) // 4, tensor_id, seed, step)[:n]


def _check_params(params: Sequence[Any]) -> list[Any]:
    import torch

    params = list(params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise InvalidInputError(f"params must be tensors, got {type(p).__name__}")
        if p.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InvalidInputError(f"MeZO kernels take float32/float16/bfloat16 tensors, got {p.dtype}")
        if p.numel() > _MAX_ELEMENTS:
            raise InvalidInputError(f"a tensor of {p.numel()} elements exceeds the 2**34 limit")
    return params


def _ids(params: Sequence[Any], tensor_ids: Sequence[int] | None) -> list[int]:
    ids = list(range(len(params))) if tensor_ids is None else [int(i) for i in tensor_ids]
    if len(ids) != len(params):
        raise InvalidInputError(f"{len(ids)} tensor_ids for {len(params)} tensors")
    return ids


def _chunks(p: Any) -> Any:
    """Yield ``(flat_view_or_copy, b0, b1, commit)`` over 2**20-element chunks of ``p``."""
    flat = p.detach().view(-1) if p.is_contiguous() else None
    src = flat if flat is not None else p.detach().reshape(-1)
    n = src.numel()
    nb = (n + 3) // 4
    for b0 in range(0, nb, _CHUNK_BLOCKS):
        b1 = min(nb, b0 + _CHUNK_BLOCKS)
        yield src[4 * b0 : min(n, 4 * b1)], b0, b1
    if flat is None:
        p.detach().copy_(src.view(p.shape))


def _as_np32(t: Any) -> np.ndarray:
    import torch

    return t.detach().to(device="cpu", dtype=torch.float32).numpy().copy()


def _write(dst: Any, values: np.ndarray) -> None:
    import torch

    dst.copy_(torch.from_numpy(values).to(dst.device).to(dst.dtype))  # one rounding


def perturb_(
    params: Sequence[Any], *, seed: int, step: int, eps: float | Sequence[float], scale: float,
    tensor_ids: Sequence[int] | None = None,
) -> None:
    """In place: ``x += scale * fl(eps * z)`` for every tensor (``z`` from :func:`normal`).

    Parameters
    ----------
    params : sequence of Tensor (float32, float16 or bfloat16)
    seed, step : int
    eps : float or one float per tensor
    scale : float
        MeZO uses +1, -2, +1 (powers of two keep ``scale * d`` exact).
    tensor_ids : sequence of int, optional
        Stream id of each tensor (default: its position).
    """
    params = _check_params(params)
    ids = _ids(params, tensor_ids)
    epss = _per_tensor(eps, len(params), "eps")
    seed, step, _ = _check_key(seed, step, 0)
    for p, tid, e in zip(params, ids, epss):
        _check_key(seed, step, tid)
        if p.numel() == 0:
            continue
        if _rt.use_kernels(p) and p.is_contiguous():
            _rt.launch("mezo.cu", "mezo_perturb", p, p.numel(), tid, seed, step, e, scale,
                       threads=(p.numel() + 3) // 4, max_blocks=_MAX_GRID, dtype=p.dtype)
            continue
        e32, s32 = np.float32(e), np.float32(scale)
        for view, b0, b1 in _chunks(p):
            z = _normal_blocks(b0, b1, tid, seed, step)[: view.numel()]
            x = _as_np32(view)
            x += s32 * (e32 * z)
            _write(view, x)


def update_(
    params: Sequence[Any], *, seed: int, step: int, eps: float | Sequence[float], projected_grad: Any,
    lr: float | Sequence[float], weight_decay: float | Sequence[float] = 0.0,
    tensor_ids: Sequence[int] | None = None,
) -> None:
    """In place, one pass: restore ``x += fl(eps * z)`` then ``x -= lr * (pg * z + wd * x)``.

    ``projected_grad`` may be a 0-dim tensor on the parameters' device: the kernel reads it
    there, so the step needs no host synchronisation.
    """
    import torch

    params = _check_params(params)
    ids = _ids(params, tensor_ids)
    n = len(params)
    epss, lrs, wds = _per_tensor(eps, n, "eps"), _per_tensor(lr, n, "lr"), _per_tensor(weight_decay, n, "weight_decay")
    seed, step, _ = _check_key(seed, step, 0)
    pg_host: float | None = None
    pg_dev: dict[Any, Any] = {}
    for p, tid, e, lr_, wd in zip(params, ids, epss, lrs, wds):
        _check_key(seed, step, tid)
        if p.numel() == 0:
            continue
        if _rt.use_kernels(p) and p.is_contiguous():
            if p.device not in pg_dev:
                pg_dev[p.device] = torch.as_tensor(projected_grad).to(device=p.device, dtype=torch.float32).reshape(())
            _rt.launch("mezo.cu", "mezo_update", p, p.numel(), tid, seed, step, e, pg_dev[p.device], lr_, wd,
                       threads=(p.numel() + 3) // 4, max_blocks=_MAX_GRID, dtype=p.dtype)
            continue
        if pg_host is None:
            pg_host = float(torch.as_tensor(projected_grad).float())
        pg32, e32, lr32, wd32 = np.float32(pg_host), np.float32(e), np.float32(lr_), np.float32(wd)
        for view, b0, b1 in _chunks(p):
            z = _normal_blocks(b0, b1, tid, seed, step)[: view.numel()]
            w = _as_np32(view)
            w += e32 * z
            g = pg32 * z
            if wd32 != 0:
                g += wd32 * w
            w -= lr32 * g
            _write(view, w)


def _per_tensor(v: Any, n: int, name: str) -> list[float]:
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise InvalidInputError(f"{name} has {len(v)} values for {n} tensors")
        return [float(x) for x in v]
    return [float(v)] * n
