"""Initialisers: ZerO (deterministic identity/Hadamard), mimetic attention, LSUV.

* :func:`zero_init_` — ZerO (Zhao et al. 2022): square weights become the identity,
  narrowing ones (out < in) a partial identity, widening ones (out > in)
  ``c * H[:out, :in]`` with the Sylvester Hadamard matrix ``H`` of size
  ``2**m``, ``m = ceil(log2(out))`` and ``c = 2**(-(m - 1) / 2)``; biases become zero.
  Convolutions get the matrix at the centre tap of the kernel. Layers closing residual
  branches are zeroed with ``zero_layers``.
* :func:`mimetic_init_` — Trockman & Kolter 2023: ``W_q^T W_k ~ a1 Z1 + b1 I`` per
  head and ``W_v^T W_o^T ~ a2 Z2 - b2 I``, ``Z ~ N(0, 1/d)``, factored by SVD.
* :func:`lsuv_init_` — Mishkin & Matas 2016: orthonormal weights, then each layer in
  forward order is divided by the standard deviation of its output on one batch until
  the variance is within ``tol`` of 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._errors import InvalidInputError
from .._validation import check_float, check_int

__all__ = ["hadamard", "zero_init_", "mimetic_init_", "lsuv_init_"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hadamard(n: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two): ``H[i, j] =
    (-1)**popcount(i & j)``.

    Examples
    --------
    >>> from thrifty.torch.init import hadamard
    >>> hadamard(4)
    tensor([[ 1.,  1.,  1.,  1.],
            [ 1., -1.,  1., -1.],
            [ 1.,  1., -1., -1.],
            [ 1., -1., -1.,  1.]])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n & (n - 1):
        raise InvalidInputError(f"n must be a positive power of two, got {n!r}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _zero_matrix(out: int, inp: int, dtype: torch.dtype) -> Tensor:
    if out <= inp:
        return torch.eye(out, inp, dtype=dtype)
    m = math.ceil(math.log2(out))
    c = 2.0 ** (-(m - 1) / 2)
    return c * hadamard(2**m, dtype=torch.float64)[:out, :inp].to(dtype)


@torch.no_grad()
def _zero_tensor_(w: Tensor) -> Tensor:
    if w.ndim < 2:
        raise InvalidInputError(f"ZerO needs a weight with ndim >= 2, got shape {tuple(w.shape)}")
    mat = _zero_matrix(w.shape[0], w.shape[1], torch.float64)
    w.zero_()
    index: tuple[slice | int, ...] = (slice(None), slice(None), *(k // 2 for k in w.shape[2:]))
    w[index] = mat.to(w.dtype).to(w.device)
    return w


def zero_init_(module_or_tensor: Any, *, zero_layers: Iterable[Any] = ()) -> Any:
    """ZerO initialisation, in place; returns its argument.

    Parameters
    ----------
    module_or_tensor : Tensor, nn.Linear, nn.ConvNd or any nn.Module
        A weight tensor of shape (out, in, *kernel); a layer (weight, and bias set to
        zero); or a model, whose every Linear/Conv layer is initialised.
    zero_layers : iterable of nn.Module or str
        Layers (or their qualified names in the model) whose weights and biases are set
        to zero: the last layer of each residual branch.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.init import zero_init_
    >>> zero_init_(torch.empty(3, 2))       # widening: c * H_4[:3, :2], c = 2**-0.5
    tensor([[ 0.7071,  0.7071],
            [ 0.7071, -0.7071],
            [ 0.7071,  0.7071]])
    """
    if isinstance(module_or_tensor, Tensor):
        return _zero_tensor_(module_or_tensor)
    if not isinstance(module_or_tensor, nn.Module):
        raise InvalidInputError(
            f"expected a torch.Tensor or nn.Module, got {type(module_or_tensor).__name__}")
    model = module_or_tensor
    names = dict(model.named_modules())
    zeroed: list[nn.Module] = []
    for z in zero_layers:
        if isinstance(z, str):
            if z not in names:
                raise InvalidInputError(f"zero_layers names {z!r}, which is not a module of the model")
            z = names[z]
        if not isinstance(z, nn.Module):
            raise InvalidInputError(f"zero_layers must hold modules or names, got {type(z).__name__}")
        zeroed.append(z)
    found = False
    for m in model.modules():
        if isinstance(m, _LAYERS):
            found = True
            _zero_tensor_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if not found:
        raise InvalidInputError("the module holds no nn.Linear or nn.Conv layer to initialise")
    for z in zeroed:
        for p in z.parameters(recurse=False):
            nn.init.zeros_(p)
    return model


def _factor(target: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``A (d x rank), B (d x rank)`` with ``A B^T`` the best rank-``rank`` approximation."""
    u, s, vh = torch.linalg.svd(target)
    r = s[:rank].sqrt()
    return u[:, :rank] * r, vh[:rank].T * r


@torch.no_grad()
def mimetic_init_(
    attn: Any,
    *,
    num_heads: int | None = None,
    alpha1: float = 0.7,
    beta1: float = 0.7,
    alpha2: float = 0.4,
    beta2: float = 0.4,
    generator: torch.Generator | None = None,
) -> Any:
    """Mimetic initialisation of self-attention (Trockman & Kolter, ICML 2023,
    arXiv 2305.09828).

    The paper writes the weights as right-multiplied ``(d, k)`` query/key and ``(d, d)``
    value/projection matrices and sets ``W_q W_k^T ~ alpha1 Z1 + beta1 I`` per head and
    ``W_v W_proj ~ alpha2 Z2 - beta2 I``, ``Z`` with i.i.d. N(0, 1/d) entries, each
    product factored by an SVD. torch stores ``(out, in)`` weights, the transposes, so
    here head ``h`` gets ``W_q[h]^T W_k[h]`` equal to the best rank-``head_dim``
    approximation of ``alpha1 Z_h + beta1 I`` (exact for one head, an independent
    ``Z_h`` per head), and ``W_v^T W_o^T = alpha2 Z - beta2 I`` exactly. Biases are left
    as they are.

    The defaults ``alpha1 = beta1 = 0.7``, ``alpha2 = beta2 = 0.4`` are the paper's
    vision-transformer setting (also used by the follow-up implementations that
    reproduce it); they mimic pre-trained ViTs, whose query/key product has a positive
    and value/projection product a negative diagonal. Pre-trained language models show
    the opposite signs: pass ``beta1 < 0`` and/or ``beta2 < 0`` for them.

    Parameters
    ----------
    attn : nn.MultiheadAttention or tuple (w_q, w_k, w_v, w_o) of (d, d) tensors
    num_heads : int
        Required for explicit weights; taken from the module otherwise.
    alpha1, beta1, alpha2, beta2 : float
        Finite; the alphas must be >= 0.
    generator : torch.Generator, optional

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.init import mimetic_init_
    >>> attn = mimetic_init_(torch.nn.MultiheadAttention(16, 1))
    >>> wq, wk, wv = attn.in_proj_weight.chunk(3)
    >>> (wv.T @ attn.out_proj.weight.T).diagonal().mean() < 0     # ~ -0.4
    tensor(True)
    """
    if isinstance(attn, nn.MultiheadAttention):
        ws: tuple[Tensor, ...]
        if not attn._qkv_same_embed_dim:
            ws = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
        else:
            ws = tuple(attn.in_proj_weight.chunk(3))
        wq, wk, wv = ws
        wo = attn.out_proj.weight
        heads = attn.num_heads
    elif isinstance(attn, (tuple, list)) and len(attn) == 4 and all(isinstance(w, Tensor) for w in attn):
        wq, wk, wv, wo = attn
        if num_heads is None:
            raise InvalidInputError("num_heads is required with explicit (w_q, w_k, w_v, w_o) weights")
        heads = num_heads
    else:
        raise InvalidInputError("attn must be an nn.MultiheadAttention or a tuple (w_q, w_k, w_v, w_o)")
    d = wq.shape[1]
    for name, w in (("w_q", wq), ("w_k", wk), ("w_v", wv), ("w_o", wo)):
        if tuple(w.shape) != (d, d):
            raise InvalidInputError(f"{name} must have shape ({d}, {d}), got {tuple(w.shape)}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or d % heads:
        raise InvalidInputError(f"num_heads must be a positive divisor of {d}, got {heads!r}")
    alpha1, alpha2 = (check_float(v, n, low=0.0) for v, n in ((alpha1, "alpha1"), (alpha2, "alpha2")))
    beta1, beta2 = (check_float(v, n) for v, n in ((beta1, "beta1"), (beta2, "beta2")))
    k = d // heads
    eye = torch.eye(d, dtype=torch.float64)

    def z() -> Tensor:
        return torch.randn(d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)

    for h in range(heads):
        a, b = _factor(alpha1 * z() + beta1 * eye, k)         # W_q[h]^T = a, W_k[h]^T = b
        wq[h * k:(h + 1) * k].copy_(a.T)
        wk[h * k:(h + 1) * k].copy_(b.T)
    a, b = _factor(alpha2 * z() - beta2 * eye, d)             # W_v^T = a, W_o^T = b^T
    wv.copy_(a.T)
    wo.copy_(b)
    return attn


@torch.no_grad()
def lsuv_init_(
    model: nn.Module,
    batch: Any,
    *,
    tol: float = 0.1,
    max_iter: int = 10,
    orthogonal: bool = True,
) -> nn.Module:
    """Layer-sequential unit-variance initialisation (Mishkin & Matas, 2016), in place.

    Every Linear/Conv layer is first made orthonormal (``orthogonal=True``); then, in
    the order the layers run on ``batch``, the layer's weight is divided by the
    standard deviation of its output until ``|Var(out) - 1| < tol`` or ``max_iter``
    rescalings. The model runs in eval mode (no dropout noise) and is restored after.

    Parameters
    ----------
    model : nn.Module
    batch : Tensor or tuple of Tensors
        One input batch (passed as ``model(batch)`` or ``model(*batch)``).
    tol : float, > 0
    max_iter : int, >= 1
    orthogonal : bool

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.init import lsuv_init_
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 5))
    >>> net = lsuv_init_(net, torch.randn(256, 20))
    >>> abs(net[:1](torch.randn(4096, 20)).var().item() - 1) < 0.2
    True
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be an nn.Module, got {type(model).__name__}")
    tol = check_float(tol, "tol", low=0.0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    if not layers:
        raise InvalidInputError("the model holds no nn.Linear or nn.Conv layer to initialise")
    args = batch if isinstance(batch, (tuple, list)) else (batch,)
    outputs: dict[int, Tensor] = {}
    order: list[nn.Module] = []

    def hook(module: nn.Module, _inp: Any, out: Tensor) -> None:
        if id(module) not in outputs:
            order.append(module)
        outputs[id(module)] = out

    was_training = model.training
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        if orthogonal:
            for m in layers:
                nn.init.orthogonal_(m.weight)
        model(*args)
        for layer in list(order):
            for _ in range(max_iter):
                outputs.clear()
                model(*args)
                var = outputs[id(layer)].float().var().item()
                if not math.isfinite(var):
                    raise InvalidInputError("a layer output is not finite; cannot rescale it")
                if abs(var - 1.0) < tol or var < 1e-12:
                    break
                cast(Tensor, layer.weight).div_(math.sqrt(var))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return model
