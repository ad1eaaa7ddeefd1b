"""Multi-tensor optimizer pieces that keep SAM, DoG/LDoG and MoMo steps on the device.

Every global quantity these optimizers need (gradient norms, distances, dot products)
is computed here into a device tensor and consumed from device memory by the update
kernels, so a step never waits for the host (no ``.item()``): it can be captured in a
CUDA graph. On CUDA tensors with CuPy the work runs in ``cuda/optim.cu``: one launch per
operation and parameter dtype over a device table of the tensors (built once per list of
tensors and cached, so a steady-state step uploads nothing), partial sums reduced in a
fixed order; elsewhere the same
formulas run as torch ops (float32 arithmetic for half-precision tensors, float64 for
float64 ones). Each function is a ``thrifty::`` torch custom op underneath, so
``torch.compile`` traces through it without a graph break.

Examples
--------
>>> import torch
>>> from thrifty.torch._cuda.optim import multi_tensor_sum
>>> xs = [torch.tensor([3.0, 4.0]), torch.tensor([12.0])]
>>> multi_tensor_sum(xs, sqrt=True)
tensor([13.])
>>> multi_tensor_sum(xs, xs, op="dot", segments=[1, 1])
tensor([ 25., 144.])
"""

from __future__ import annotations

import threading
import types
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._errors import InvalidInputError, ThriftyError
from . import _runtime as _rt

__all__ = ["multi_tensor_sum", "sam_perturb_", "dog_update_", "momo_moments_", "momo_update_"]

_KERNELS = ("mt_segment_sum",) + tuple(
    _rt.kernel_name(k, dt) for k in ("mt_partials", "sam_perturb", "dog_update", "momo_moments", "momo_update")
    for dt in ("float32", "float16", "bfloat16")
)
_THREADS = 256

_OPS = {"sumsq": 0, "dot": 1, "prodsq": 2}
_OP_NAMES = {v: k for k, v in _OPS.items()}
_MAX_BLOCKS = 1024  # blocks of a reduction (partial sums per tensor)
_CHUNK = 8192  # elements per block of an element-wise update (TH_MT_CHUNK in optim.cu)
_TABLES: OrderedDict[Any, Any] = OrderedDict()
_TABLES_MAX = 256  # cached tables; those used while a CUDA graph was captured are kept for good
_KEEP: set[Any] = set()
_TABLES_LOCK = threading.Lock()


def _work_dtype(t: Any) -> Any:
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _kernel_ok(*groups: Sequence[Any]) -> bool:
    """All tensors contiguous float32/16/bf16 that the kernels can take (CUDA, runtime usable)."""
    import torch

    ts = [t for g in groups for t in g]
    if not ts or not all(t.is_contiguous() for t in ts):
        return False
    if any(t.dtype not in (torch.float32, torch.float16, torch.bfloat16) for t in ts):
        return False
    return _rt.use_kernels(*ts)


def _blocks(n: int) -> int:
    return max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS))


def _cached(key: Any, device: Any) -> Any:
    """The cached table entry ``(device tensor, host tensor, blocks)`` of ``key``, or None.

    Tables used while a CUDA graph is being captured are never evicted afterwards: the
    graph reads them at every replay."""
    capturing = device.type == "cuda" and _capturing()
    with _TABLES_LOCK:
        hit = _TABLES.get(key)
        if hit is not None:
            _TABLES.move_to_end(key)
            if capturing:
                _KEEP.add(key)
        return hit


def _upload(key: Any, words: Any, device: Any, blocks: int = 0) -> Any:
    """Cache and return the entry ``(device tensor, host tensor, blocks)`` of the int64
    ``words`` (a numpy array) under ``key`` (unless cached already).

    A CUDA table is copied from pinned host memory without blocking (never a pageable
    copy, so a table first needed during CUDA-graph capture becomes a captured copy),
    and the host buffer stays referenced with it.
    """
    import torch

    hit = _cached(key, device)
    if hit is not None:
        return hit
    host = torch.from_numpy(np.ascontiguousarray(words, dtype=np.int64))
    if device.type == "cuda":
        try:
            host = host.pin_memory()
            dev = host.to(device, non_blocking=True)
        except RuntimeError as e:
            if not _capturing():
                raise
            raise ThriftyError(
                "a multi-tensor optimizer step met a new list of tensors during CUDA-graph "
                "capture and could not upload its table there; run the step once before "
                f"capturing it (warm-up), as torch.cuda.graphs recommends ({e})") from e
    else:  # the tests' host build of the kernels reads CPU memory
        dev = host
    entry = (dev, host, int(blocks))
    with _TABLES_LOCK:
        _TABLES[key] = entry
        if device.type == "cuda" and _capturing():
            _KEEP.add(key)
        while len(_TABLES) > _TABLES_MAX:
            old = next((k for k in _TABLES if k not in _KEEP), None)
            if old is None:
                break
            del _TABLES[old]
    return entry


def _capturing() -> bool:
    import torch

    return bool(torch.cuda.is_current_stream_capturing())


def _device_offsets(offsets: list[int], device: Any) -> Any:
    """Segment offsets as a cached device tensor (no upload once cached)."""
    return _upload(("offsets", device, tuple(offsets)), np.asarray(offsets, dtype=np.int64), device)[0]


def _table(kind: str, lists: Sequence[Sequence[Any]], aux: Sequence[int]) -> tuple[Any, int]:
    """The device table of one multi-tensor launch (layout in ``cuda/optim.cu``) and its
    number of blocks, cached by the tensors' addresses and sizes: a steady-state step
    finds every table cached and uploads nothing.

    ``lists``: K lists of n tensors (tensor i of every list has the same numel);
    ``kind``: ``"reduce"`` (the blocks of a per-tensor reduction, :func:`_blocks`) or
    ``"map"`` (``ceil(numel / _CHUNK)`` blocks); ``aux``: one integer per tensor.
    """
    first = lists[0]
    numels = tuple(t.numel() for t in first)
    device = first[0].device
    key = (kind, device, tuple(t.data_ptr() for lst in lists for t in lst), numels, tuple(aux))
    hit = _cached(key, device)
    if hit is None:
        n, k = len(first), len(lists)
        nb = [(_blocks(m) if kind == "reduce" else (m + _CHUNK - 1) // _CHUNK) for m in numels]
        words = np.empty(n * (k + 2) + n + 1, dtype=np.int64)
        entries = words[: n * (k + 2)].reshape(n, k + 2)
        entries[:, :k] = np.asarray(key[2], dtype=np.int64).reshape(k, n).T
        entries[:, k] = numels
        entries[:, k + 1] = aux
        words[n * (k + 2):] = np.concatenate([[0], np.cumsum(nb, dtype=np.int64)])
        hit = _upload(key, words, device, int(words[-1]))
    return hit[0], hit[2]


def _by_dtype(ts: Sequence[Any]) -> list[list[int]]:
    """Indices of ``ts`` grouped by dtype (one launch per group), in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, t in enumerate(ts):
        groups.setdefault(t.dtype, []).append(i)
    return list(groups.values())


def _segments(n_tensors: int, segments: Sequence[int] | None) -> list[int]:
    seg = [n_tensors] if segments is None else [int(s) for s in segments]
    if any(s < 0 for s in seg) or sum(seg) != n_tensors:
        raise InvalidInputError(f"segments {seg} must be non-negative and add up to {n_tensors} tensors")
    return seg


def multi_tensor_sum(
    xs: Sequence[Any], ys: Sequence[Any] | None = None, *, op: str = "sumsq", c: float = 0.0,
    segments: Sequence[int] | None = None, sqrt: bool = False,
) -> Any:
    """Per-segment sums over lists of tensors, as a device tensor.

    ``op="sumsq"``: ``sum (x + c y)**2`` (``c=0``: squared norm, ``c=-1``: squared
    distance); ``"dot"``: ``sum x y``; ``"prodsq"``: ``sum (x y)**2`` (ASAM's
    ``||T_w g||**2``). ``segments`` gives the number of consecutive tensors per output
    (default: one segment of all); ``sqrt`` returns the square roots.

    Returns
    -------
    Tensor of shape (n_segments,)
        float32 (float64 for float64 input), on the tensors' device.
    """
    import torch

    xs = list(xs)
    if not xs:
        raise InvalidInputError("xs is empty")
    if op not in _OPS:
        raise InvalidInputError(f"op must be one of {tuple(_OPS)}, got {op!r}")
    if ys is None:
        if op != "sumsq" or c != 0:
            raise InvalidInputError(f"op={op!r} (c={c}) needs ys")
        ys = xs
    ys = list(ys)
    if len(ys) != len(xs) or any(x.shape != y.shape for x, y in zip(xs, ys)):
        raise InvalidInputError("xs and ys must be lists of tensors of equal shapes")
    seg = _segments(len(xs), segments)
    return _ops().mt_sum(xs, ys, _OPS[op], float(c), seg, bool(sqrt))


def _mt_sum_impl(xs: list[Any], ys: list[Any], op: Any, c: float, segments: list[int], sqrt: bool) -> Any:
    import torch

    seg = list(segments)
    c = float(c)
    op = _OP_NAMES[op]
    dev = xs[0].device
    if _kernel_ok(xs, ys) and all(x.dtype == y.dtype for x, y in zip(xs, ys)):
        starts = np.concatenate([[0], np.cumsum([_blocks(x.numel()) for x in xs])]).astype(int)
        partials = torch.empty(int(starts[-1]), dtype=torch.float32, device=dev)
        for idx in _by_dtype(xs):
            tab, grid = _table("reduce", _pick([xs, ys], idx), [int(starts[i]) for i in idx])
            _rt.launch("optim.cu", "mt_partials", tab, len(idx), _OPS[op], c, partials, blocks=grid,
                       dtype=xs[idx[0]].dtype)
        tensor_bounds = np.concatenate([[0], np.cumsum(seg)]).astype(int)
        offsets = [int(starts[i]) for i in tensor_bounds]
        out = torch.empty(len(seg), dtype=torch.float32, device=dev)
        _rt.launch("optim.cu", "mt_segment_sum", partials, _device_offsets(offsets, dev), len(seg), out,
                   bool(sqrt), blocks=len(seg))
        return out
    wd = _work_dtype(xs[0])
    vals = []
    for x, y in zip(xs, ys):
        a, b = x.detach().to(wd), y.detach().to(wd)
        if op == "sumsq":
            t = a + c * b if c != 0 else a
            vals.append(torch.sum(t * t))
        elif op == "dot":
            vals.append(torch.sum(a * b))
        else:
            vals.append(torch.sum((a * b) ** 2))
    out = torch.zeros(len(seg), dtype=wd, device=dev)
    i = 0
    for k, s in enumerate(seg):
        if s:
            out[k] = torch.stack([v.to(dev) for v in vals[i: i + s]]).sum()
        i += s
    return out.sqrt() if sqrt else out


def _pick(lists: list[list[Any]], idx: list[int]) -> list[list[Any]]:
    """The tensors at ``idx`` of every list (the lists themselves when ``idx`` is all)."""
    if len(idx) == len(lists[0]):
        return lists
    return [[lst[i] for i in idx] for lst in lists]


def _map_launch(kernel: str, lists: list[list[Any]], *scalars: Any) -> None:
    """One element-wise launch of ``kernel`` per dtype group of ``lists[0]``: the table,
    its tensor count, then ``scalars``."""
    for idx in _by_dtype(lists[0]):
        tab, grid = _table("map", _pick(lists, idx), idx)
        if grid:
            _rt.launch("optim.cu", kernel, tab, len(idx), *scalars, blocks=grid, dtype=lists[0][idx[0]].dtype)


def _scalar_f32(v: Any, device: Any) -> Any:
    import torch

    return torch.as_tensor(v).to(device=device, dtype=torch.float32).reshape(())


def sam_perturb_(
    params: Sequence[Any], grads: Sequence[Any], olds: Sequence[Any], *, rho: float, adaptive: bool,
    grad_norm: Any,
) -> None:
    """In place: ``old = w``; ``w += (adaptive ? w*w*g : g) * rho / (grad_norm + 1e-12)``.

    ``grad_norm`` is a device scalar (e.g. from :func:`multi_tensor_sum`): it is read by
    the kernel, never by the host.
    """
    import torch

    params, grads, olds = list(params), list(grads), list(olds)
    if params:
        norm = torch.as_tensor(grad_norm, device=params[0].device)
        _ops().sam_perturb_(params, grads, olds, float(rho), bool(adaptive), norm)


def _sam_perturb_impl(params: list[Any], grads: list[Any], olds: list[Any], rho: float, adaptive: bool,
                      grad_norm: Any) -> None:
    import torch

    if _kernel_ok(params, grads, olds):
        _map_launch("sam_perturb", [params, grads, olds], _scalar_f32(grad_norm, params[0].device), rho,
                    bool(adaptive))
        return
    for p, g, o in zip(params, grads, olds):
        o.copy_(p)
        w = p.detach().to(_work_dtype(p))
        gg = g.to(w.dtype)
        # the kernel's operations in its order, each rounded once (no fused multiply-add,
        # a true division: ``float / tensor`` would multiply by a rounded reciprocal)
        scale = torch.div(torch.tensor(rho, dtype=w.dtype), torch.as_tensor(grad_norm).to(w) + 1e-12)
        e = (w * w * gg if adaptive else gg) * scale
        if w.dtype == p.dtype:
            p.detach().add_(e)
        else:
            p.detach().copy_(w + e)


def dog_update_(params: Sequence[Any], grads: Sequence[Any], *, eta: Any, weight_decay: float = 0.0) -> None:
    """In place: ``w -= eta * (g + weight_decay * w)``; ``eta`` a device scalar or one per tensor."""
    import torch

    params, grads = list(params), list(grads)
    if not params:
        return
    etas = list(eta) if isinstance(eta, (list, tuple)) else [eta] * len(params)
    if len(etas) != len(params):
        raise InvalidInputError(f"{len(etas)} step sizes for {len(params)} tensors")
    etas = [torch.as_tensor(e, device=p.device) for e, p in zip(etas, params)]
    _ops().dog_update_(params, grads, etas, float(weight_decay))


def _dog_update_impl(params: list[Any], grads: list[Any], etas: list[Any], weight_decay: float) -> None:
    import torch
    if _kernel_ok(params, grads):
        e0 = etas[0]
        if all(e is e0 or (e.data_ptr() == e0.data_ptr() and e.dtype == e0.dtype) for e in etas):
            eta, stride = _scalar_f32(e0, params[0].device), 0  # one step size for all
        else:  # one per tensor (LDoG): one stack, read at the tensor's index
            eta, stride = torch.stack([e.reshape(()) for e in etas]).to(torch.float32), 1
        _map_launch("dog_update", [params, grads], eta, stride, weight_decay)
        return
    for p, g, e in zip(params, grads, etas):
        x = p.detach().to(_work_dtype(p))
        gg = g.to(x.dtype)
        if weight_decay:
            gg = gg + weight_decay * x  # two roundings, as the kernel (``add(alpha=)`` may fuse them)
        step = torch.as_tensor(e).to(x) * gg
        if x.dtype == p.dtype:
            p.detach().sub_(step)
        else:
            p.detach().copy_(x - step)


def momo_moments_(params: Sequence[Any], grads: Sequence[Any], grad_avgs: Sequence[Any], *, beta: float) -> Any:
    """In place ``d = beta d + (1 - beta) g`` (float32 ``d``); returns per-tensor sums.

    Returns
    -------
    Tensor of shape (3, n_tensors)
        Rows ``sum x g``, ``sum x d`` and ``sum d d`` (``x`` as before the step, ``d`` as
        after), on the device.
    """
    return _ops().momo_moments_(list(params), list(grads), list(grad_avgs), float(beta))


def _momo_moments_impl(params: list[Any], grads: list[Any], grad_avgs: list[Any], beta: float) -> Any:
    """The eager implementation behind ``thrifty::momo_moments_``."""
    import torch

    params, grads, grad_avgs = list(params), list(grads), list(grad_avgs)
    dev = params[0].device
    n = len(params)
    if _kernel_ok(params, grads, grad_avgs) and all(d.dtype == torch.float32 for d in grad_avgs):
        nbs = [_blocks(p.numel()) for p in params]
        starts = [0] + list(np.cumsum(nbs).astype(int))
        total = int(starts[-1])
        partials = torch.empty(3 * total, dtype=torch.float32, device=dev)
        for idx in _by_dtype(params):
            tab, grid = _table("reduce", _pick([params, grads, grad_avgs], idx), [int(starts[i]) for i in idx])
            _rt.launch("optim.cu", "momo_moments", tab, len(idx), beta, partials, total, blocks=grid,
                       dtype=params[idx[0]].dtype)
        offsets = [k * total + int(starts[i]) for k in range(3) for i in range(n)] + [3 * total]
        out = torch.empty(3 * n, dtype=torch.float32, device=dev)
        _rt.launch("optim.cu", "mt_segment_sum", partials, _device_offsets(offsets, dev), 3 * n, out, 0,
                   blocks=3 * n)
        return out.reshape(3, n)
    out = torch.zeros(3, n, dtype=grad_avgs[0].dtype if grad_avgs else torch.float32, device=dev)
    for i, (p, g, d) in enumerate(zip(params, grads, grad_avgs)):
        x, gg = p.detach().to(d.dtype), g.to(d.dtype)
        # d beta + g (1 - beta), each product rounded on its own and 1 - beta taken in d's
        # precision, as the kernel does
        d.mul_(beta).add_(gg * (torch.ones((), dtype=d.dtype) - beta))
        out[:, i] = torch.stack([torch.sum(x * gg), torch.sum(x * d), torch.sum(d * d)]).to(out)
    return out


def momo_update_(params: Sequence[Any], grad_avgs: Sequence[Any], *, tau: Any, c: float = 1.0) -> None:
    """In place: ``w = (w - tau d) / c`` (``c = 1 + lr * weight_decay``; ``tau`` a device scalar)."""
    import torch

    params = list(params)
    if params:
        _ops().momo_update_(params, list(grad_avgs), torch.as_tensor(tau, device=params[0].device), float(c))


def _momo_update_impl(params: list[Any], grad_avgs: list[Any], tau: Any, c: float) -> None:
    import torch

    if _kernel_ok(params, grad_avgs) and all(d.dtype == torch.float32 for d in grad_avgs):
        _map_launch("momo_update", [params, grad_avgs], _scalar_f32(tau, params[0].device), c)
        return
    for p, d in zip(params, grad_avgs):
        x = p.detach().to(d.dtype)
        x = x - torch.as_tensor(tau).to(x) * d
        if c != 1.0:
            x = x / c
        p.detach().copy_(x)


# --------------------------------------------------------------------- torch custom ops
_TORCH_OPS: Any = None


def _ops() -> Any:
    """The ``thrifty::`` custom ops wrapping the implementations above (registered once).

    As custom ops (with fake implementations for shapes) the kernels are opaque nodes to
    ``torch.compile``: a compiled optimizer step traces through them without a graph break.
    """
    global _TORCH_OPS
    if _TORCH_OPS is not None:
        return _TORCH_OPS
    import torch

    lib = torch.library

    mt_sum = lib.custom_op(
        "thrifty::mt_sum", _mt_sum_impl, mutates_args=(),
        schema="(Tensor[] xs, Tensor[] ys, int op, float c, int[] segments, bool sqrt) -> Tensor")
    mt_sum.register_fake(lambda xs, ys, op, c, segments, sqrt: xs[0].new_empty(
        (len(segments),), dtype=_work_dtype(xs[0])))
    sam = lib.custom_op(
        "thrifty::sam_perturb_", _sam_perturb_impl, mutates_args=("params", "olds"),
        schema="(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] olds, float rho, bool adaptive, "
               "Tensor grad_norm) -> ()")
    sam.register_fake(lambda *a: None)
    dog = lib.custom_op(
        "thrifty::dog_update_", _dog_update_impl, mutates_args=("params",),
        schema="(Tensor(a!)[] params, Tensor[] grads, Tensor[] etas, float weight_decay) -> ()")
    dog.register_fake(lambda *a: None)
    mom = lib.custom_op(
        "thrifty::momo_moments_", _momo_moments_impl, mutates_args=("grad_avgs",),
        schema="(Tensor[] params, Tensor[] grads, Tensor(a!)[] grad_avgs, float beta) -> Tensor")
    mom.register_fake(lambda params, grads, grad_avgs, beta: grad_avgs[0].new_empty((3, len(params))))
    upd = lib.custom_op(
        "thrifty::momo_update_", _momo_update_impl, mutates_args=("params",),
        schema="(Tensor(a!)[] params, Tensor[] grad_avgs, Tensor tau, float c) -> ()")
    upd.register_fake(lambda *a: None)
    _TORCH_OPS = types.SimpleNamespace(mt_sum=mt_sum, sam_perturb_=sam, dog_update_=dog, momo_moments_=mom,
                                       momo_update_=upd)
    return _TORCH_OPS
