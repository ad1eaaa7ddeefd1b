"""Sharpness-Aware Minimization (Foret et al., 2021) and ASAM (Kwon et al., 2021).

The update, for a base optimizer ``B`` and gradient ``g`` at ``w``::

    e = rho * g / ||g||                      (SAM)
    e = rho * |w|^2 * g / || |w| * g ||      (ASAM, ``adaptive=True``)
    w <- w + e; g' = grad L(w + e); w <- w - e (restored exactly); B.step() with g'

The calling convention is the de-facto PyTorch one (davda54/sam, pytorch-optimizer):
``first_step`` / ``second_step`` around two forward-backward passes, or ``step(closure)``
after the first backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..._validation import check_float
from . import _fused
from ._common import InvalidInputError, compute_dtype, rollback_on_error

__all__ = [
    "SAM",
    "sam_perturbation",
    "disable_running_stats",
    "enable_running_stats",
    "frozen_running_stats",
]


def sam_perturbation(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    rho: float,
    adaptive: bool = False,
    grad_norm: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Functional form: the ascent perturbations ``e`` of SAM/ASAM (not applied).

    Parameters
    ----------
    params, grads : list of Tensor
        Parameters and their gradients (same shapes).
    rho : float
        Neighbourhood radius.
    adaptive : bool, default=False
        ASAM: scale by ``|w|`` (``T_w = |w|``).
    grad_norm : Tensor, optional
        Norm to divide by (default: the norm over ``params``, ``|| T_w g ||``).

    Returns
    -------
    list of Tensor
        ``e_i`` in the compute dtype (float32 for half-precision parameters).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import sam_perturbation
    >>> e = sam_perturbation([torch.zeros(2)], [torch.tensor([3.0, 4.0])], rho=0.5)
    >>> e[0]
    tensor([0.3000, 0.4000])
    """
    ws = [p.detach().to(compute_dtype(p)) for p in params]
    gs = [g.to(compute_dtype(p)) for p, g in zip(params, grads)]
    if grad_norm is None:
        grad_norm = _norm_of(ws, gs, [adaptive] * len(ws))
    if grad_norm is None:  # no tensors
        grad_norm = torch.zeros(())
    scale = rho / (grad_norm + 1e-12)
    out = []
    for w, g in zip(ws, gs):
        e = _perturbation(w, g, adaptive, scale)
        out.append(e)
    return out


def _norm_of(ws: list[torch.Tensor], gs: list[torch.Tensor], adaptive: list[bool]) -> torch.Tensor | None:
    """``|| T_w g ||`` over all tensors (``T_w = |w|`` where ``adaptive``, else 1), on the
    device of the first; None for no tensors."""
    norms = [((w.abs() * g) if a else g).norm(p=2) for w, g, a in zip(ws, gs, adaptive)]
    if not norms:
        return None
    dev = norms[0].device
    return torch.stack([n.to(dev) for n in norms]).norm(p=2)


def _perturbation(w: torch.Tensor, g: torch.Tensor, adaptive: bool, scale: torch.Tensor) -> torch.Tensor:
    """``e = scale * T_w^2 g`` (``T_w = |w|`` for ASAM, else 1)."""
    return (w * w * g if adaptive else g) * scale.to(w)


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization wrapping any base optimizer (ASAM with ``adaptive``).

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts (groups may set their own ``rho``/``adaptive``).
    base_optimizer : type
        The base optimizer class, e.g. ``torch.optim.SGD``; it is built on the same
        param groups with ``**base_kwargs``. Schedulers must be given
        ``sam.base_optimizer`` (or ``sam``: both share the param groups).
    rho : float, default=0.05
        Neighbourhood radius (the ASAM paper uses 2.0 with ``adaptive=True``).
    adaptive : bool, default=False
        ASAM (scale-invariant neighbourhood ``T_w = |w|``).
    **base_kwargs
        Passed to ``base_optimizer``.

    Notes
    -----
    ``state_dict()`` is the base optimizer's (momentum buffers etc.), loadable with
    ``torch.load(..., weights_only=True)``; the saved ``w`` between the two half steps is
    not saved. Use :func:`disable_running_stats` / :func:`enable_running_stats` (or
    :func:`frozen_running_stats`) around the second forward pass so BatchNorm statistics
    are updated once per step. The gradient norm is global over all groups.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import SAM
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    >>> loss_fn = lambda: torch.nn.functional.mse_loss(model(x), y)
    >>> loss_fn().backward()
    >>> opt.first_step(zero_grad=True)
    >>> loss_fn().backward()
    >>> opt.second_step(zero_grad=True)
    >>> def closure():
    ...     loss = loss_fn()
    ...     loss.backward()
    ...     return loss
    >>> closure()  # doctest: +ELLIPSIS
    tensor(...)
    >>> _ = opt.step(closure)
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        check_float(rho, "rho", low=0.0)
        if isinstance(base_optimizer, torch.optim.Optimizer) or not callable(base_optimizer):
            raise InvalidInputError(
                "base_optimizer must be an optimizer class (e.g. torch.optim.SGD), "
                f"got {type(base_optimizer).__name__}"
            )
        defaults = dict(rho=rho, adaptive=bool(adaptive), **base_kwargs)
        super().__init__(params, defaults)
        for group in self.param_groups:
            check_float(group["rho"], "rho", low=0.0)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self._old: dict[torch.Tensor, torch.Tensor] = {}
        # the fused path's saved-weight buffers, reused from step to step: fixed addresses
        # keep the multi-tensor kernels' tables cached (peak memory as before: the saved
        # weights live through the second forward/backward anyway)
        self._old_bufs: dict[torch.Tensor, torch.Tensor] = {}
        self._in_step = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            if hasattr(self, "base_optimizer"):
                param_group.setdefault("rho", self.defaults["rho"])
                param_group.setdefault("adaptive", self.defaults["adaptive"])
                check_float(param_group["rho"], "rho", low=0.0)
                self.base_optimizer.add_param_group(param_group)
            else:
                super().add_param_group(param_group)

    def _run_hooks(self, post: bool, kwargs: dict[str, Any]) -> None:
        """Run the step hooks (``register_step_pre_hook`` / ``register_step_post_hook``
        and the global ones) as ``step`` does: pre hooks at :meth:`first_step`, post hooks
        after :meth:`second_step`, not again inside :meth:`step` (torch runs them there).
        The hooks get ``(self, (self,), kwargs)``; a pre hook's return value is ignored."""
        if self._in_step:
            return
        from torch.optim import optimizer as _topt

        own = self._optimizer_step_post_hooks if post else self._optimizer_step_pre_hooks
        glob = getattr(_topt, "_global_optimizer_post_hooks" if post else "_global_optimizer_pre_hooks", {})
        hooks = list(own.values()) + list(glob.values()) if post else list(glob.values()) + list(own.values())
        for hook in hooks:
            hook(self, (self,), kwargs)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move to ``w + e`` (saving ``w``); then the caller runs forward+backward again.

        Step pre hooks registered on this optimizer run here (when called directly)."""
        if self._old:
            raise RuntimeError("first_step called twice without second_step")
        self._run_hooks(False, {"zero_grad": zero_grad})
        live = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if _fused.use_fused(live):
            self._fused_first_step()
            if zero_grad:
                self.zero_grad()
            return
        ws, gs = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                ws.append(p.detach().to(compute_dtype(p)))
                gs.append(p.grad.to(compute_dtype(p)))
        adaptive_flags = [
            group["adaptive"] for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        grad_norm = _norm_of(ws, gs, adaptive_flags)
        if grad_norm is None:
            raise RuntimeError("SAM.first_step: no parameter has a gradient")
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._old[p] = p.detach().clone()
                w = p.detach().to(compute_dtype(p))
                g = p.grad.to(w.dtype)
                e = _perturbation(w, g, group["adaptive"], scale)
                if w.dtype == p.dtype:
                    p.add_(e)
                else:
                    p.copy_(w + e)
        if zero_grad:
            self.zero_grad()

    def _fused_first_step(self) -> None:
        """Device-only first step: norms and perturbation in the CUDA backend's kernels."""
        from .._cuda import optim as fo

        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        groups = [(g, ps) for g, ps in groups if ps]
        sq = [
            fo.multi_tensor_sum(ps, [p.grad for p in ps], op="prodsq") if g["adaptive"]
            else fo.multi_tensor_sum([p.grad for p in ps])
            for g, ps in groups
        ]
        grad_norm = torch.cat(sq).sum().sqrt()
        for g, ps in groups:
            olds = [self._old_buf(p) for p in ps]
            fo.sam_perturb_(ps, [p.grad for p in ps], olds, rho=g["rho"], adaptive=g["adaptive"], grad_norm=grad_norm)
            self._old.update(zip(ps, olds))

    def _old_buf(self, p: torch.Tensor) -> torch.Tensor:
        buf = self._old_bufs.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = self._old_bufs[p] = torch.empty_like(p, memory_format=torch.contiguous_format)
        return buf

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Restore ``w`` exactly and take the base optimizer's step with the new gradients.

        Step post hooks registered on this optimizer run after it (when called directly)."""
        if not self._old:
            raise RuntimeError("second_step called without first_step")
        if hasattr(torch, "_foreach_copy_"):  # one multi-tensor copy instead of one per tensor
            torch._foreach_copy_(list(self._old), list(self._old.values()))
        else:
            for p, old in self._old.items():
                p.copy_(old)
        self._old.clear()
        self.base_optimizer.step()
        self._opt_called = True  # lr schedulers attached to this wrapper see a step
        if zero_grad:
            self.zero_grad()
        self._run_hooks(True, {"zero_grad": zero_grad})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Both half steps; ``closure`` must run a full forward **and** backward pass.

        Call it after the first backward pass (gradients at ``w`` present).
        Returns the closure's loss at ``w + e``.
        """
        if closure is None:
            raise InvalidInputError(
                "SAM.step requires a closure that runs forward and backward "
                "(or call first_step / second_step yourself)"
            )
        self._in_step = True  # torch runs the step hooks around step() itself
        try:
            self.first_step(zero_grad=True)
            with torch.enable_grad():
                loss = closure()
            self.second_step(zero_grad=False)
        finally:
            self._in_step = False
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state


def _batchnorms(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            yield m


def disable_running_stats(model: nn.Module) -> None:
    """Stop BatchNorm layers from updating running statistics (for SAM's 2nd pass).

    Normalisation still uses the batch statistics in training mode; ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` are left untouched.
    Undo with :func:`enable_running_stats`.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import disable_running_stats, enable_running_stats
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> disable_running_stats(bn)
    >>> _ = bn(torch.randn(4, 2))
    >>> bn.running_mean
    tensor([0., 0.])
    >>> enable_running_stats(bn)
    """
    for m in _batchnorms(model):
        if not hasattr(m, "_thrifty_tracked"):
            m._thrifty_tracked = m.track_running_stats  # type: ignore[assignment]
            m.track_running_stats = False


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats`."""
    for m in _batchnorms(model):
        if hasattr(m, "_thrifty_tracked"):
            m.track_running_stats = m._thrifty_tracked  # type: ignore[assignment]
            del m._thrifty_tracked


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager form of :func:`disable_running_stats`."""
    disable_running_stats(model)
    try:
        yield model
    finally:
        enable_running_stats(model)
