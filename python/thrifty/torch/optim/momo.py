"""MoMo and MoMo-Adam: model-based momentum with an adaptive, loss-aware step size
(Schaipp, Ohana, Eickenberg, Defazio & Gower, 2024).

With ``d`` the momentum of the gradients, ``fbar`` the same average of the losses and
``gamma`` that of ``<g, x>``, MoMo takes ``x -= tau * d`` with
``tau = min(lr / rho, max(fbar - rho * lb + <d, x> - gamma, 0) / ||d||^2)``;
MoMo-Adam preconditions with ``D = sqrt(v_hat) + eps``. Weight decay is the proximal
``x /= 1 + lr * weight_decay`` (the reference's default). All parameters of all groups
form one model (one loss): ``<d, x>``, ``gamma`` and the norm are global, as in
fabian-sp/MoMo. ``step`` needs the loss: ``step(closure)`` or ``step(loss=loss)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..._validation import check_float
from . import _fused
from ._common import InvalidInputError, Optimizer, check_betas, compute_dtype, rollback_on_error
from ._common import compiling as _compiling
from ._common import stack_views, stacked_views, working_copy, write_back

__all__ = ["MoMo", "MoMoAdam"]


class _LossBased(Optimizer):
    """Shared plumbing: the loss argument and the global scalars kept in ``state``."""

    lb0: float
    use_fstar: bool

    def _loss(self, closure: Callable[[], Any] | None, loss: Any) -> torch.Tensor:
        if closure is not None and loss is not None:
            raise InvalidInputError("pass either a closure or loss=..., not both")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            raise InvalidInputError(
                f"{type(self).__name__}.step needs the loss: step(closure) or step(loss=loss)"
            )
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss))
        loss = loss.detach()
        return loss.to(compute_dtype(loss))

    def _globals(self) -> dict[str, Any]:
        # One loss for the whole model: its averages live in the first parameter's state.
        return self.state[self.param_groups[0]["params"][0]]

    def _begin(self, closure: Callable[[], Any] | None, loss: Any) -> tuple[torch.Tensor, dict[str, Any], int]:
        """The loss, the global state and the step count ``k`` (from 1) of a new step."""
        loss = self._loss(closure, loss)
        g = self._globals()
        g["momo_step"] = k = g.get("momo_step", 0) + 1
        if k == 1:
            g["lb"], g["initial_lb"] = self.lb0, self.lb0
        return loss, g, k

    def _tau(
        self,
        g: dict[str, Any],
        lr: float,
        lam: float,
        rho: float,
        dot: torch.Tensor,
        gamma: torch.Tensor,
        norm: torch.Tensor,
    ) -> tuple[float, torch.Tensor]:
        """The proximal factor ``c = 1 + lr * lam`` and the step size ``tau`` of one group
        (``rho``: the bias correction of the loss average), with the ``use_fstar`` updates
        of the lower bound."""
        c = 1 + lr * lam
        if self.use_fstar:
            self._reset_lb(g, c * g["loss_avg"] + dot - c * gamma, c * rho)
        nom = c * (g["loss_avg"] - rho * g["lb"]) + dot - c * gamma
        tau = torch.clamp(torch.clamp(nom, min=0.0) / norm, max=lr / rho)
        if self.use_fstar:
            self._update_lb(g, g["loss_avg"] + dot - gamma, tau, norm, rho)
        return c, tau

    def _reset_lb(self, g: dict[str, Any], cap: torch.Tensor, factor: float) -> None:
        """The ``use_fstar`` reset of the lower bound when the model's cap falls below it."""
        if float(cap) < factor * g["lb"]:
            g["lb"] = max(float(cap) / (2 * factor), g["initial_lb"])

    def _update_lb(
        self, g: dict[str, Any], h: torch.Tensor, tau: torch.Tensor, norm: torch.Tensor, rho: float
    ) -> None:
        g["lb"] = max(float((h - 0.5 * tau * norm) / rho), g["initial_lb"])


class MoMo(_LossBased):
    """MoMo: SGD with momentum and a Polyak-type adaptive step size.

    Parameters
    ----------
    params : iterable
    lr : float, default=1.0
        Upper bound of the step size.
    beta : float, default=0.9
        Momentum in [0, 1).
    lb : float, default=0.0
        A lower bound of the loss (``use_fstar=True`` estimates one online).
    weight_decay : float, default=0.0
    use_fstar : bool, default=False
    bias_correction : bool, default=False
        The paper's bias-corrected averaging (averages start at 0).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import MoMo
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = MoMo(model.parameters())
    >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
    >>> for _ in range(5):
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     _ = opt.step(loss=loss)
    >>> opt.step()
    Traceback (most recent call last):
    ...
    thrifty._errors.InvalidInputError: MoMo.step needs the loss: step(closure) or step(loss=loss)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        beta: float = 0.9,
        lb: float = 0.0,
        weight_decay: float = 0.0,
        use_fstar: bool = False,
        bias_correction: bool = False,
    ) -> None:
        check_float(lr, "lr", low=0.0)
        check_float(weight_decay, "weight_decay", low=0.0)
        self.beta = check_float(beta, "beta", low=0.0, high=1.0, high_inclusive=False)
        self.lb0 = check_float(lb, "lb")
        self.use_fstar = bool(use_fstar)
        self.bias_correction = bool(bias_correction)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            check_float(self.param_groups[-1]["lr"], "lr", low=0.0)
            check_float(self.param_groups[-1]["weight_decay"], "weight_decay", low=0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:  # type: ignore[override]
        """One MoMo step; give the loss of the current batch (closure or ``loss=``)."""
        loss, g, k = self._begin(closure, loss)
        beta = self.beta
        if k == 1:
            g["loss_avg"] = torch.zeros_like(loss) if self.bias_correction else loss.clone()
        live = [p for grp in self.param_groups for p in grp["params"] if p.grad is not None]
        fused = _fused.use_fused(live)
        if fused:  # in place: a captured CUDA graph keeps updating the same tensor
            g["loss_avg"].mul_(beta).add_(loss.to(g["loss_avg"]), alpha=1 - beta)
        else:
            g["loss_avg"] = beta * g["loss_avg"] + (1 - beta) * loss
        rho = 1 - beta**k if self.bias_correction else 1.0
        dot = gamma = norm = torch.zeros((), dtype=compute_dtype(loss))
        if fused:
            dot, gamma, norm = self._fused_moments(live, beta)
        for p in (live if not fused else []):
            st = self.state[p]
            x, grad = working_copy(p), p.grad.to(compute_dtype(p))
            if "grad_avg" not in st:
                self._init_averages(st, x, grad)
            st["grad_avg"].mul_(beta).add_(grad, alpha=1 - beta)
            st["grad_dot_w"].mul_(beta).add_(torch.sum(x * grad), alpha=1 - beta)
            dot = dot + torch.sum(x * st["grad_avg"])
            gamma = gamma + st["grad_dot_w"]
            norm = norm + torch.sum(st["grad_avg"] * st["grad_avg"])
        for grp in self.param_groups:
            lr, lam = grp["lr"], grp["weight_decay"]
            c, tau = self._tau(g, lr, lam, rho, dot, gamma, norm)
            if fused:
                from .._cuda import optim as fo

                ps = [p for p in grp["params"] if p.grad is not None]
                if ps:
                    fo.momo_update_(ps, [self.state[p]["grad_avg"] for p in ps], tau=tau, c=c if lam > 0 else 1.0)
                continue
            for p in grp["params"]:
                if p.grad is None:
                    continue
                x = working_copy(p)
                x.sub_(tau.to(x.dtype) * self.state[p]["grad_avg"])
                if lam > 0:
                    x.div_(c)
                write_back(p, x)
        return loss

    def _init_averages(self, st: dict[str, Any], x: torch.Tensor, grad: torch.Tensor) -> None:
        """First-step averages of a parameter: zeros (``bias_correction``) or the first values."""
        if self.bias_correction:
            st["grad_avg"] = torch.zeros_like(x)
            st["grad_dot_w"] = torch.zeros((), dtype=x.dtype, device=x.device)
        else:
            st["grad_avg"] = grad.clone()
            st["grad_dot_w"] = torch.sum(x * grad)

    def _fused_moments(self, live: list[torch.Tensor], beta: float) -> tuple[torch.Tensor, ...]:
        """Averages and the global sums in one device pass per tensor (the CUDA backend)."""
        from .._cuda import optim as fo

        for p in live:
            st = self.state[p]
            if "grad_avg" not in st:
                assert p.grad is not None
                self._init_averages(st, working_copy(p), p.grad.to(compute_dtype(p)))
        sums = fo.momo_moments_(live, [p.grad for p in live], [self.state[p]["grad_avg"] for p in live], beta=beta)
        states = [self.state[p] for p in live]
        if _compiling():  # views are a run-time layout; a compiled graph keeps the plain loop
            for i, st in enumerate(states):
                st["grad_dot_w"].mul_(beta).add_(sums[0, i], alpha=1 - beta)
            return sums[1].sum(), torch.stack([st["grad_dot_w"] for st in states]).sum(), sums[2].sum()
        dots = stacked_views(states, "grad_dot_w")  # every tensor's average, one vector
        if dots is None:
            dots = stack_views(states, "grad_dot_w")
        dots.mul_(beta).add_(sums[0].to(dots), alpha=1 - beta)  # in place: graphs keep using it
        return sums[1].sum(), dots.sum(), sums[2].sum()


class MoMoAdam(_LossBased):
    """MoMo-Adam: MoMo's adaptive step size with Adam's preconditioner.

    Parameters
    ----------
    params : iterable
    lr : float, default=1e-2
    betas : (float, float), default=(0.9, 0.999)
    eps : float, default=1e-8
    lb : float, default=0.0
    weight_decay : float, default=0.0
        Proximal (``divide=True``, default) or AdamW-style (``divide=False``).
    use_fstar : bool, default=False
    divide : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import MoMoAdam
    >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = MoMoAdam([p], lr=0.1)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (p**2).sum()
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(3):
    ...     _ = opt.step(closure)
    >>> bool((p.detach().abs() < torch.tensor([1.0, 2.0])).all())
    True
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        lb: float = 0.0,
        weight_decay: float = 0.0,
        use_fstar: bool = False,
        divide: bool = True,
    ) -> None:
        self.lb0 = check_float(lb, "lb")
        self.use_fstar = bool(use_fstar)
        self.divide = bool(divide)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            grp = self.param_groups[-1]
            check_float(grp["lr"], "lr", low=0.0)
            check_float(grp["eps"], "eps", low=0.0)
            check_float(grp["weight_decay"], "weight_decay", low=0.0)
            grp["betas"] = check_betas(grp["betas"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:  # type: ignore[override]
        """One MoMo-Adam step; give the loss of the current batch (closure or ``loss=``)."""
        loss, g, k = self._begin(closure, loss)
        if k == 1:
            g["loss_avg"] = torch.zeros_like(loss)
        dot = gamma = norm = torch.zeros((), dtype=compute_dtype(loss))
        beta1 = self.param_groups[-1]["betas"][0]
        for grp in self.param_groups:
            b1, b2 = grp["betas"]
            for p in grp["params"]:
                if p.grad is None:
                    continue
                x, grad, st = working_copy(p), p.grad.to(compute_dtype(p)), self.state[p]
                if "step" not in st:
                    st["step"] = 0
                    st["grad_avg"] = torch.zeros_like(x)
                    st["grad_avg_sq"] = torch.zeros_like(x)
                    st["grad_dot_w"] = torch.zeros((), dtype=x.dtype, device=x.device)
                st["step"] += 1
                st["grad_avg"].mul_(b1).add_(grad, alpha=1 - b1)
                st["grad_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                st["grad_dot_w"].mul_(b1).add_(torch.sum(x * grad), alpha=1 - b1)
                Dk = st["grad_avg_sq"].div(1 - b2 ** st["step"]).sqrt().add(grp["eps"])
                dot = dot + torch.sum(x * st["grad_avg"])
                gamma = gamma + st["grad_dot_w"]
                norm = norm + torch.sum(st["grad_avg"].mul(st["grad_avg"].div(Dk)))
        g["loss_avg"] = (1 - beta1) * loss + beta1 * g["loss_avg"]
        for grp in self.param_groups:
            lr, lam, eps = grp["lr"], grp["weight_decay"], grp["eps"]
            b1, b2 = grp["betas"]
            bc1 = 1 - b1**k
            bc2 = 1 - b2**k
            c, tau = self._tau(g, lr, lam, bc1, dot, gamma, norm)
            for p in grp["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                Dk = st["grad_avg_sq"].div(bc2).sqrt().add(eps)
                x = working_copy(p)
                if lam > 0 and not self.divide:
                    x.mul_(1 - lam * lr)
                x.sub_(tau.to(x.dtype) * (st["grad_avg"] / Dk))
                if lam > 0 and self.divide:
                    x.div_(c)
                write_back(p, x)
        return loss
