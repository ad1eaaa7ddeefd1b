"""Global Sparse Momentum SGD (Ding et al., NeurIPS 2019) and gradient noise
(Neelakantan et al., 2015)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..._validation import check_float, check_int
from ._common import InvalidInputError, Optimizer, closure_loss, compute_dtype, grad_pairs
from ._common import rollback_on_error, working_copy, write_back
from ._rng import StepGenerators

__all__ = ["GlobalSparseMomentumSGD", "GradientNoise", "gsm_mask"]


def gsm_mask(params: list[torch.Tensor], grads: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    """Functional form: the masks ``B`` keeping the top ``ceil(density * N)`` entries of
    ``|w * dL/dw|`` over all tensors together.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import gsm_mask
    >>> gsm_mask([torch.tensor([1.0, 2.0, 3.0])], [torch.tensor([3.0, 1.0, 0.1])], 1 / 3)
    [tensor([ True, False, False])]
    """
    scores = [(w.detach() * g).abs().reshape(-1).float() for w, g in zip(params, grads)]
    flat = torch.cat(scores)
    q = max(1, math.ceil(density * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, q, sorted=False).indices] = True
    out, start = [], 0
    for w in params:
        out.append(keep[start : start + w.numel()].reshape(w.shape))
        start += w.numel()
    return out


class GlobalSparseMomentumSGD(Optimizer):
    """GSM: momentum SGD where only the globally top-``density`` entries by ``|w g|`` get
    the loss gradient; weight decay applies to all (the rest decays towards 0).

    ``z <- momentum * z + lr * (weight_decay * w + B * g); w <- w - z``.

    Parameters
    ----------
    params : iterable
    lr : float, default=0.01
    momentum : float, default=0.99
    weight_decay : float, default=5e-4
    density : float
        Fraction of entries (over all parameters with gradients) that receive gradients.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import GlobalSparseMomentumSGD
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    >>> opt = GlobalSparseMomentumSGD([w], lr=0.1, weight_decay=0.0, density=0.25)
    >>> w.grad = torch.ones(4)
    >>> _ = opt.step()
    >>> w.detach()
    tensor([1.0000, 2.0000, 3.0000, 3.9000])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.01,
        *,
        momentum: float = 0.99,
        weight_decay: float = 5e-4,
        density: float,
    ) -> None:
        self.density = check_float(density, "density", low=0.0, low_inclusive=False, high=1.0)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            grp = self.param_groups[-1]
            check_float(grp["lr"], "lr", low=0.0)
            check_float(grp["momentum"], "momentum", low=0.0, high=1.0, high_inclusive=False)
            check_float(grp["weight_decay"], "weight_decay", low=0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One GSM step (``closure`` optional, re-evaluates the loss with backward)."""
        loss = closure_loss(closure)
        pairs = grad_pairs(self.param_groups)
        if not pairs:
            return loss
        masks = gsm_mask([p for _, p in pairs], [p.grad for _, p in pairs], self.density)
        for (grp, p), mask in zip(pairs, masks):
            st = self.state[p]
            w = working_copy(p)
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(w)
            z = st["momentum_buffer"]
            grad = p.grad.to(w.dtype)
            g = torch.where(mask, grad, torch.zeros_like(grad))
            if grp["weight_decay"] > 0:
                g = g.add(w, alpha=grp["weight_decay"])
            z.mul_(grp["momentum"]).add_(g, alpha=grp["lr"])
            w.sub_(z)
            write_back(p, w)
        return loss


class GradientNoise:
    """Wraps an optimizer and adds ``N(0, eta / (1 + t)^gamma)`` to every gradient before
    each step (annealed gradient noise; ``t`` counts steps from 0).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    eta : float, default=0.3
        Initial variance (the paper tries 0.01, 0.3, 1.0).
    gamma : float, default=0.55
    seed : int, default=0
        Noise of step ``t`` comes from a generator seeded from ``(seed, t)``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import GradientNoise
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = GradientNoise(torch.optim.SGD([w], lr=1.0), eta=0.3, seed=0)
    >>> w.grad = torch.zeros(3)
    >>> _ = opt.step()
    >>> bool((w.detach() != 0).all())
    True
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, eta: float = 0.3, gamma: float = 0.55, seed: int = 0):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise InvalidInputError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.eta = check_float(eta, "eta", low=0.0)
        self.gamma = check_float(gamma, "gamma", low=0.0)
        check_int(seed, "seed", low=0)
        self.optimizer = optimizer
        self.seed = seed
        self.t = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def std(self, t: int | None = None) -> float:
        """Noise standard deviation at step ``t`` (default: the next step)."""
        t = self.t if t is None else t
        return math.sqrt(self.eta / (1 + t) ** self.gamma)

    @torch.no_grad()
    def add_noise(self) -> None:
        """Add this step's noise to the gradients (``step`` calls it)."""
        gens = StepGenerators(self.seed, self.t)
        sd = self.std()
        for grp in self.optimizer.param_groups:
            for p in grp["params"]:
                if p.grad is None:
                    continue
                dtype = compute_dtype(p.grad)
                noise = torch.randn(p.grad.shape, generator=gens(p.grad.device), dtype=dtype, device=p.grad.device)
                p.grad.copy_(p.grad.to(dtype) + sd * noise)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate ``closure`` (if any), add the noise, then step the wrapped optimizer."""
        loss = closure_loss(closure)
        self.add_noise()
        self.t += 1
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "t": self.t, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.t = int(state_dict["t"])
        self.seed = int(state_dict["seed"])
