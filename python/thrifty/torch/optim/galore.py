"""GaLore (Zhao et al., 2024) and Fira (Chen et al., 2024): AdamW in a low-rank
gradient subspace.

``GaLoreAdamW`` reproduces galore-torch's ``GaLoreAdamW`` arithmetic: for a 2-D parameter
in a group with ``rank``, ``P`` = top-``rank`` singular vectors of the gradient (from
``torch.linalg.svd`` in float32, refreshed when ``step % update_proj_gap == 0``), Adam on
``R = P^T G`` (or ``G P^T``) with denominator ``sqrt(v) + eps``, bias correction folded in
the step size, the update projected back and multiplied by ``scale``, then decoupled
weight decay ``p -= lr * weight_decay * p``. Groups without ``rank`` get the same AdamW.
``FiraAdamW`` adds the residual ``S = G - scale * P P^T G`` scaled per row/column by
``||psi(R)|| / ||R||`` with the norm-growth limiter (Fira's reference arithmetic).

The projection matrices are kept in ``optimizer.state`` as tensors (``"ortho"``, and
``"ortho_right"`` for ``proj_type="full"``), so ``state_dict()`` loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..._validation import check_float, check_int
from ._common import InvalidInputError, Optimizer, check_betas, closure_loss, compute_dtype
from ._common import rollback_on_error, working_copy, write_back

__all__ = [
    "GaLoreAdamW",
    "FiraAdamW",
    "galore_orthogonal",
    "galore_project",
    "galore_project_back",
]

_PROJ_TYPES = ("std", "reverse_std", "right", "left", "full")


def _side(shape: torch.Size, proj_type: str) -> str:
    tall = shape[0] >= shape[1]
    if proj_type == "std":
        return "right" if tall else "left"
    if proj_type == "reverse_std":
        return "left" if tall else "right"
    return proj_type


def galore_orthogonal(grad: torch.Tensor, rank: int, side: str) -> list[torch.Tensor]:
    """Top-``rank`` singular vectors of ``grad`` (SVD in float32, cast back).

    ``side="right"`` gives ``Vh[:rank]`` (``rank x n``), ``"left"`` ``U[:, :rank]``
    (``m x rank``), ``"full"`` both ``[U[:, :rank], Vh[:rank]]``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import galore_orthogonal
    >>> [P] = galore_orthogonal(torch.diag(torch.tensor([3.0, 1.0])), 1, "left")
    >>> P.abs()
    tensor([[1.],
            [0.]])
    """
    U, _, Vh = torch.linalg.svd(grad.float(), full_matrices=False)

    def own(m: torch.Tensor) -> torch.Tensor:
        # a contiguous copy, not a view: a view would keep all of U or Vh (min(m, n)
        # wide) alive in the optimizer state while the projection is in use
        return m.to(grad.dtype, memory_format=torch.contiguous_format, copy=True)

    if side == "right":
        return [own(Vh[:rank, :])]
    if side == "left":
        return [own(U[:, :rank])]
    return [own(U[:, :rank]), own(Vh[:rank, :])]


def galore_project(grad: torch.Tensor, ortho: list[torch.Tensor], side: str) -> torch.Tensor:
    """Low-rank gradient: ``G P^T`` (right), ``P^T G`` (left) or ``A^T G B^T`` (full)."""
    if side == "right":
        return torch.matmul(grad, ortho[0].t())
    if side == "left":
        return torch.matmul(ortho[0].t(), grad)
    return torch.matmul(ortho[0].t(), grad) @ ortho[1].t()


def galore_project_back(low: torch.Tensor, ortho: list[torch.Tensor], side: str, scale: float) -> torch.Tensor:
    """Full-rank update ``scale * (R P | P R | A R B)`` from the low-rank one."""
    if side == "right":
        full = torch.matmul(low, ortho[0])
    elif side == "left":
        full = torch.matmul(ortho[0], low)
    else:
        full = torch.matmul(ortho[0], low) @ ortho[1]
    # in place: the product is a fresh full-size tensor, and a second one would cost
    # its page faults (same bits as ``full * scale``)
    return full.mul_(scale)


class GaLoreAdamW(Optimizer):
    """AdamW with GaLore gradient projection for the param groups that set ``rank``.

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts. Groups with ``rank`` (2-D parameters only) may set
        ``update_proj_gap`` (default 200), ``scale`` (default 0.25) and ``proj_type``
        (``"std"`` default, ``"reverse_std"``, ``"left"``, ``"right"``, ``"full"``) —
        galore-torch's keys, so switching is a one-import change.
    lr : float, default=1e-3
        Learning rate; ``scale * lr`` is the effective one in projected groups.
    betas : (float, float), default=(0.9, 0.999)
    eps : float, default=1e-6
        Added to ``sqrt(v)`` (not bias-corrected), as galore-torch.
    weight_decay : float, default=0.0
        Decoupled, applied after the update: ``p -= lr * weight_decay * p``.
    correct_bias : bool, default=True

    Notes
    -----
    Moments are not re-projected when the subspace changes (as the reference). Half
    precision parameters use float32 arithmetic and float32 state.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import GaLoreAdamW
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 1))
    >>> galore = [p for p in model.parameters() if p.dim() == 2]
    >>> other = [p for p in model.parameters() if p.dim() != 2]
    >>> opt = GaLoreAdamW(
    ...     [{"params": other},
    ...      {"params": galore, "rank": 1, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}],
    ...     lr=1e-2)
    >>> x, y = torch.randn(32, 16), torch.randn(32, 1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     torch.nn.functional.mse_loss(model(x), y).backward()
    ...     _ = opt.step()
    >>> opt.state[model[0].weight]["exp_avg"].shape  # 8 x 16: left projection, rank 1
    torch.Size([1, 16])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            self._check_group(self.param_groups[-1])

    def _check_group(self, group: dict[str, Any]) -> None:
        check_float(group["lr"], "lr", low=0.0)
        group["betas"] = check_betas(group["betas"])
        check_float(group["eps"], "eps", low=0.0)
        check_float(group["weight_decay"], "weight_decay", low=0.0)
        if "alpha" in group and "scale" not in group:  # Fira's name of the scale
            group["scale"] = group["alpha"]
        if "rank" not in group:
            return
        rank = check_int(group["rank"], "rank", low=1)
        check_int(group.setdefault("update_proj_gap", 200), "update_proj_gap", low=1)
        group["scale"] = check_float(group.setdefault("scale", 0.25), "scale", low=0.0)
        group.setdefault("proj_type", "std")
        if group["proj_type"] not in self._proj_types():
            raise InvalidInputError(f"proj_type must be one of {self._proj_types()}, got {group['proj_type']!r}")
        for p in group["params"]:
            if p.dim() != 2:
                raise InvalidInputError(
                    f"a group with 'rank' must hold 2-D parameters only, got shape {tuple(p.shape)}"
                )
            if rank > min(p.shape):
                raise InvalidInputError(f"rank {rank} is larger than the matrix of shape {tuple(p.shape)}")

    def _proj_types(self) -> tuple[str, ...]:
        return _PROJ_TYPES

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One update; ``closure`` (optional) re-evaluates the loss with backward."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise InvalidInputError("GaLoreAdamW does not support sparse gradients")
                work = compute_dtype(p)
                full_grad = p.grad if p.grad.dtype == work else p.grad.to(work)
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                grad = full_grad
                side = ""
                if "rank" in group:
                    side = _side(p.shape, group["proj_type"])
                    if "ortho" not in state or state["step"] % group["update_proj_gap"] == 0:
                        mats = galore_orthogonal(full_grad, group["rank"], side)
                        state["ortho"] = mats[0]
                        if side == "full":
                            state["ortho_right"] = mats[1]
                    grad = galore_project(full_grad, self._ortho(state), side)
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bc1 = 1.0 - beta1 ** state["step"]
                    bc2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bc2) / bc1
                norm_grad = exp_avg / denom
                if "rank" in group:
                    norm_grad = self._direction(state, group, side, full_grad, grad, norm_grad)
                w = working_copy(p)
                w.add_(norm_grad, alpha=-step_size)
                if group["weight_decay"] > 0.0:
                    w.add_(w, alpha=-group["lr"] * group["weight_decay"])
                write_back(p, w)
        return loss

    @staticmethod
    def _ortho(state: dict[str, Any]) -> list[torch.Tensor]:
        if "ortho_right" in state:
            return [state["ortho"], state["ortho_right"]]
        return [state["ortho"]]

    def _direction(
        self,
        state: dict[str, Any],
        group: dict[str, Any],
        side: str,
        full_grad: torch.Tensor,
        low_grad: torch.Tensor,
        norm_grad: torch.Tensor,
    ) -> torch.Tensor:
        return galore_project_back(norm_grad, self._ortho(state), side, group["scale"])


class FiraAdamW(GaLoreAdamW):
    """GaLore plus Fira's full-rank residual: norm-based scaling and norm-growth limiter.

    Same signature and group keys as :class:`GaLoreAdamW` (``alpha`` is accepted as
    Fira's name of ``scale``); groups with ``rank`` may also set ``norm_growth_limit``
    (gamma, default 1.01). ``proj_type="full"`` is not supported. For a projected
    parameter the update direction is ``scale * P psi(R) + S * phi`` where
    ``S = G - scale * P P^T G``, ``phi = ||psi(R)|| / (||R|| + 1e-8)`` per row (right
    projection) or column (left), and ``||S phi||`` may grow at most by gamma per step.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import FiraAdamW
    >>> w = torch.nn.Parameter(torch.randn(6, 4))
    >>> opt = FiraAdamW([{"params": [w], "rank": 2, "alpha": 0.25}], lr=1e-2)
    >>> w.grad = torch.randn(6, 4)
    >>> _ = opt.step()
    >>> sorted(opt.state[w])
    ['exp_avg', 'exp_avg_sq', 'ortho', 'scaling_grad', 'step']
    """

    def _proj_types(self) -> tuple[str, ...]:
        return ("std", "reverse_std", "right", "left")

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if "rank" in group:
            group["norm_growth_limit"] = check_float(
                group.setdefault("norm_growth_limit", 1.01), "norm_growth_limit", low=1.0
            )

    def _direction(
        self,
        state: dict[str, Any],
        group: dict[str, Any],
        side: str,
        full_grad: torch.Tensor,
        low_grad: torch.Tensor,
        norm_grad: torch.Tensor,
    ) -> torch.Tensor:
        ortho = self._ortho(state)
        subgrad = galore_project_back(low_grad, ortho, side, group["scale"])
        dim = 1 if side == "right" else 0
        factor = torch.norm(norm_grad, dim=dim) / (torch.norm(low_grad, dim=dim) + 1e-8)
        if dim == 1:
            factor = factor.unsqueeze(1)
        # (G - subgrad) * factor, written over subgrad (a fresh tensor): the same bits
        # as the out-of-place expressions, without three more full-size temporaries
        scaling_grad = torch.sub(full_grad, subgrad, out=subgrad).mul_(factor)
        gamma = group["norm_growth_limit"]
        norm = torch.norm(scaling_grad)
        if "scaling_grad" in state:
            limiter = torch.clamp(norm / (state["scaling_grad"] + 1e-8), min=gamma) / gamma
            scaling_grad.div_(limiter)
            state["scaling_grad"] = norm / limiter
        else:
            state["scaling_grad"] = norm
        return galore_project_back(norm_grad, ortho, side, group["scale"]).add_(scaling_grad)
