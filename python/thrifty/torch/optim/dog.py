"""DoG and LDoG, parameter-free step sizes (Ivgi, Hinder & Carmon, 2023), and the
polynomial-decay iterate averager the paper requires (Shamir & Zhang, 2013).

DoG, for one param group seen as a single vector ``x``::

    r_eps = reps_rel * (1 + ||x_0||)
    rbar_t = max(r_eps, max_{i<=t} ||x_i - x_0||)
    G_t = eps + sum_{i<=t} ||g_i||^2            (g includes weight_decay * x)
    x_{t+1} = x_t - lr * rbar_t / sqrt(G_t) * g_t

LDoG applies the same rule to every tensor separately. The state (``x0``, ``rbar``,
``G``) lives in ``optimizer.state`` as tensors, so ``state_dict()`` loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..._validation import check_float
from . import _fused
from ._common import InvalidInputError, Optimizer, closure_loss, compute_dtype, rollback_on_error
from ._common import compiling, stack_views, stacked_views

__all__ = ["DoG", "LDoG", "dog_step_size", "PolynomialDecayAverager"]


def dog_step_size(rbar: torch.Tensor, g_sq_sum: torch.Tensor, *, lr: float = 1.0) -> torch.Tensor:
    """Functional form: the DoG step size ``lr * rbar / sqrt(G)``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import dog_step_size
    >>> dog_step_size(torch.tensor(2.0), torch.tensor(16.0))
    tensor(0.5000)
    """
    return lr * rbar / torch.sqrt(g_sq_sum)


def _reps(group: dict[str, Any]) -> float:
    # With an explicit first step size the initial distance is 0, as in the reference.
    return 0.0 if group["init_eta"] is not None else float(group["reps_rel"])


def _eta(group: dict[str, Any], st: dict[str, Any], first: bool) -> torch.Tensor:
    """The step size from ``st``'s ``rbar`` and ``G``; ``init_eta`` on the first step."""
    eta = dog_step_size(st["rbar"], st["G"], lr=group["lr"])
    if first and group["init_eta"] is not None:
        eta = torch.full_like(eta, group["init_eta"])
    return eta


class DoG(Optimizer):
    """Distance over Gradients: SGD with a parameter-free step size.

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts; each group is one "vector" for DoG.
    lr : float, default=1.0
        The multiplier ``c`` of the paper; changing it is not recommended.
    reps_rel : float, default=1e-6
        Relative initial distance (1e-4 for models with BatchNorm; smaller if the first
        steps diverge).
    eps : float, default=1e-8
        Added to the sum of squared gradient norms.
    weight_decay : float, default=0.0
        L2 penalty added to the gradient (also counted in ``G``).
    init_eta : float, optional
        Explicit first step size; then ``reps_rel`` is ignored (``rbar`` starts at 0), as
        in the reference implementation.

    Notes
    -----
    Iterate averaging is part of the method: evaluate
    :class:`PolynomialDecayAverager`'s averaged model. Parameters without gradients are
    skipped (they still count in ``||x_0||`` and the distance).

    float16 / bfloat16 parameters are stepped through a float32 master copy kept in the
    optimizer state (``"x32"``, 4 bytes per value, plus the float32 initial point
    ``"x0"``) and rounded to the parameter's dtype after each step: DoG's first steps are
    ``reps_rel`` times the weights' norm, far below half precision's resolution, so
    without it the parameters never move and the distance never grows. Change such
    parameters only through the optimizer (or load its ``state_dict``).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import DoG, PolynomialDecayAverager
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = DoG(model.parameters())
    >>> avg = PolynomialDecayAverager(model, gamma=8)
    >>> x, y = torch.randn(32, 4), torch.randn(32, 1)
    >>> for _ in range(20):
    ...     opt.zero_grad()
    ...     torch.nn.functional.mse_loss(model(x), y).backward()
    ...     _ = opt.step()
    ...     avg.step()
    >>> float(torch.nn.functional.mse_loss(avg.averaged_model(x), y)) < 2.0
    True
    """

    _layerwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        reps_rel: float = 1e-6,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        init_eta: float | None = None,
    ) -> None:
        defaults = dict(lr=lr, reps_rel=reps_rel, eps=eps, weight_decay=weight_decay, init_eta=init_eta)
        self._check(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _check(group: dict[str, Any]) -> None:
        check_float(group["lr"], "lr", low=0.0, low_inclusive=False)
        check_float(group["reps_rel"], "reps_rel", low=0.0, low_inclusive=group.get("init_eta") is not None)
        check_float(group["eps"], "eps", low=0.0)
        check_float(group["weight_decay"], "weight_decay", low=0.0)
        if group.get("init_eta") is not None:
            check_float(group["init_eta"], "init_eta", low=0.0, low_inclusive=False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            self._check(self.param_groups[-1])

    def _group_state(self, group: dict[str, Any]) -> dict[str, Any]:
        # DoG's per-group scalars are kept in the state of the group's first parameter.
        return self.state[group["params"][0]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One DoG step; ``closure`` (optional) re-evaluates the loss with backward."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = group["params"]
            if not any(p.grad is not None for p in params):
                continue
            first = "x0" not in self.state[params[0]]
            if first:
                for p in params:
                    self._init_point(p)
            if _fused.use_fused(params):
                self._fused_group_step(group, first)
                continue
            xs = [self._master(p) for p in params]
            x0s = [self.state[p]["x0"] for p in params]
            wd = group["weight_decay"]
            grads: list[torch.Tensor | None] = []
            for p, x in zip(params, xs):
                if p.grad is None:
                    grads.append(None)
                    continue
                g = p.grad.to(x.dtype)
                grads.append(g.add(x, alpha=wd) if wd > 0 else g)
            etas = self._update(group, xs, x0s, grads, first)
            for p, x, g, eta in zip(params, xs, grads, etas):
                if g is None:
                    continue
                x.sub_(eta * g)
                if x.dtype != p.dtype:
                    p.copy_(x)
        return loss

    def _init_point(self, p: torch.Tensor) -> None:
        """The initial point ``x0`` in the compute dtype, and for a half-precision
        parameter its float32 master copy ``x32`` (the iterate DoG updates)."""
        st = self.state[p]
        st["x0"] = p.detach().to(compute_dtype(p), copy=True)
        if st["x0"].dtype != p.dtype:
            st["x32"] = st["x0"].clone()

    def _master(self, p: torch.Tensor) -> torch.Tensor:
        """The iterate of ``p`` in the compute dtype: the parameter itself, or the float32
        master copy of a half-precision parameter."""
        st = self.state[p]
        if "x32" not in st and compute_dtype(p) != p.dtype:  # a parameter added after the first step
            st["x32"] = p.detach().to(compute_dtype(p), copy=True)
        return st["x32"] if "x32" in st else p.detach()

    def _fused_group_step(self, group: dict[str, Any], first: bool) -> None:
        """The step of one group with device-side norms (the CUDA backend), no host sync.
        Half-precision parameters step their float32 master copies (float32 kernels) and
        are rounded back once."""
        from .._cuda import optim as fo

        params = group["params"]
        xs = [self._master(p) for p in params]
        live_p = [p for p in params if p.grad is not None]
        live = [x for p, x in zip(params, xs) if p.grad is not None]
        grads = [p.grad.to(x.dtype) for p, x in zip(live_p, live)]
        wd = group["weight_decay"]
        if self._layerwise:
            one = [1] * len(live)
            g_sq = fo.multi_tensor_sum(grads, live, c=wd, segments=one)
            x0s = [self.state[p]["x0"] for p in live_p]
            dist = fo.multi_tensor_sum(live, x0s, c=-1.0, segments=one, sqrt=True)
            xn = fo.multi_tensor_sum(live, segments=one, sqrt=True)
            vecs = None if compiling() else self._stacked(live_p)
            if vecs is not None:  # every tensor's rbar and G are views of two vectors: O(1) ops
                rbar, G = vecs
                torch.maximum(rbar, dist, out=rbar)  # in place: a captured graph keeps using them
                G.add_(g_sq)
                etas = list(_eta(group, {"rbar": rbar, "G": G}, first).unbind())
            else:
                etas = []
                for i, p in enumerate(live_p):
                    st = self.state[p]
                    if "rbar" not in st:
                        st["rbar"] = _reps(group) * (1 + xn[i])
                        st["G"] = g_sq[i] + group["eps"]
                    else:
                        torch.maximum(st["rbar"], dist[i], out=st["rbar"])
                        st["G"].add_(g_sq[i])
                    etas.append(_eta(group, st, first))
                if not compiling():  # views are a run-time layout; compiled graphs keep the loop
                    self._stack(live_p)
            fo.dog_update_(live, grads, eta=etas, weight_decay=wd)
        else:
            st = self._group_state(group)
            g_sq = fo.multi_tensor_sum(grads, live, c=wd)[0]
            if first:
                st["rbar"] = _reps(group) * (1 + fo.multi_tensor_sum(xs, sqrt=True)[0])
                st["G"] = g_sq + group["eps"]
            else:
                x0s = [self.state[p]["x0"] for p in params]
                torch.maximum(st["rbar"], fo.multi_tensor_sum(xs, x0s, c=-1.0, sqrt=True)[0], out=st["rbar"])
                st["G"].add_(g_sq)
            fo.dog_update_(live, grads, eta=_eta(group, st, first), weight_decay=wd)
        for p, x in zip(live_p, live):
            if x.dtype != p.dtype:
                p.detach().copy_(x)

    def _stacked(self, params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The vectors whose elements are the ``rbar`` and ``G`` of ``params`` (in order),
        when every one is still such a view; else None."""
        states = [self.state[p] for p in params]
        rbar, G = stacked_views(states, "rbar"), stacked_views(states, "G")
        return None if rbar is None or G is None else (rbar, G)

    def _stack(self, params: list[torch.Tensor]) -> None:
        """Make the ``rbar`` and ``G`` of ``params`` views of two vectors (same values), so
        that later fused steps update all of them with one operation each."""
        if params:
            states = [self.state[p] for p in params]
            stack_views(states, "rbar")
            stack_views(states, "G")

    def _update(
        self,
        group: dict[str, Any],
        xs: list[torch.Tensor],
        x0s: list[torch.Tensor],
        grads: list[torch.Tensor | None],
        first: bool,
    ) -> list[torch.Tensor]:
        st = self._group_state(group)
        g_sq = torch.stack([(g**2).sum() for g in grads if g is not None]).sum()
        if first:
            st["rbar"] = _reps(group) * (1 + torch.stack([x.norm() for x in xs]).norm())
            st["G"] = g_sq + group["eps"]
        else:
            dist = torch.stack([torch.norm(x - x0) for x, x0 in zip(xs, x0s)]).norm()
            st["rbar"] = torch.maximum(st["rbar"], dist)
            st["G"] = st["G"] + g_sq
        return [_eta(group, st, first)] * len(xs)


class LDoG(DoG):
    """Layer-wise DoG: the DoG rule for every parameter tensor separately.

    Same signature as :class:`DoG`; ``rbar`` and ``G`` are kept per tensor.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import LDoG
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = LDoG([p], reps_rel=0.1)
    >>> p.grad = torch.ones(3)
    >>> _ = opt.step()
    >>> opt.state[p]["rbar"]
    tensor(0.2732)
    """

    _layerwise = True

    def _update(
        self,
        group: dict[str, Any],
        xs: list[torch.Tensor],
        x0s: list[torch.Tensor],
        grads: list[torch.Tensor | None],
        first: bool,
    ) -> list[torch.Tensor]:
        etas = []
        for p, x, x0, g in zip(group["params"], xs, x0s, grads):
            st = self.state[p]
            if g is None:
                etas.append(torch.zeros(()))
                continue
            g_sq = (g**2).sum()
            if "rbar" not in st:
                st["rbar"] = _reps(group) * (1 + x.norm())
                st["G"] = g_sq + group["eps"]
            else:
                st["rbar"] = torch.maximum(st["rbar"], torch.norm(x - x0))
                st["G"] = st["G"] + g_sq
            etas.append(_eta(group, st, first))
        return etas


class PolynomialDecayAverager:
    """Polynomial-decay iterate averaging: ``xbar_t = (1 - w_t) xbar_{t-1} + w_t x_t``
    with ``w_t = (gamma + 1) / (gamma + t)`` (``t`` from 1).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; a deep copy holds the average (``averaged_model``).
    gamma : float, default=8
        Decay power; ``gamma=0`` is the uniform average.

    Notes
    -----
    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied, not averaged.
    Floating buffers (running statistics) are averaged like the weights.
    """

    def __init__(self, model: nn.Module, gamma: float = 8.0) -> None:
        self.gamma = check_float(gamma, "gamma", low=0.0)
        self.model = model
        self.av_model = copy.deepcopy(model)
        for p in self.av_model.parameters():
            p.requires_grad_(False)
        self.t = 1

    @property
    def averaged_model(self) -> nn.Module:
        """The model holding the averaged weights."""
        return self.av_model

    @torch.no_grad()
    def step(self) -> None:
        """Fold the current weights of ``model`` into the average."""
        w = (self.gamma + 1) / (self.gamma + self.t)
        av_sd = self.av_model.state_dict()
        for k, v in self.model.state_dict().items():
            a = av_sd[k]
            if not a.is_floating_point():
                a.copy_(v)
            else:
                a.mul_(1 - w).add_(v.to(a.device), alpha=w)
        self.t += 1

    def reset(self) -> None:
        """Restart the average at the next :meth:`step`."""
        self.t = 1

    def state_dict(self) -> dict[str, Any]:
        """``{"t": int, "av_model": state_dict}`` (``weights_only``-loadable)."""
        return {"t": self.t, "gamma": self.gamma, "av_model": self.av_model.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        if "t" not in state_dict or "av_model" not in state_dict:
            raise InvalidInputError("state_dict must have the keys 't' and 'av_model'")
        self.t = int(state_dict["t"])
        self.gamma = float(state_dict.get("gamma", self.gamma))
        self.av_model.load_state_dict(state_dict["av_model"])
