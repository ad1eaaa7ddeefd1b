"""FRUGAL: full-rank updates with a low-dimensional optimizer state (Zmushko et al.,
ICML 2025, arXiv 2411.07837).

The gradient is split into a state-full part, updated by Adam, and a state-free
remainder updated by signSGD (or SGD)::

    G = P(G) + (G - P(G));  W -= lr * Adam(P(G)) + free_lr * sign(G - P(G))

``projection="svd"`` / ``"random"``: for every 2-D parameter ``P`` projects on
``r = max(1, round(density * min(m, n)))`` singular vectors of the gradient (GaLore's
side rule) or on a random orthonormal basis; other parameters use Adam in full.
``projection="blockwise"``: a random ``density`` fraction of the parameter tensors (at
least one) is state-full with full Adam; the rest is state-free. The subspace (or the
chosen blocks) is refreshed every ``update_gap`` steps; the Adam moments of projected
matrices restart then (they belong to the old subspace), those of blocks leaving the
state-full set are freed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..._validation import check_float, check_int
from ._common import InvalidInputError, Optimizer, check_betas, closure_loss, compute_dtype
from ._common import grad_pairs, rollback_on_error, working_copy, write_back
from ._rng import step_generator
from .galore import _side, galore_orthogonal, galore_project, galore_project_back

__all__ = ["FRUGAL"]


class FRUGAL(Optimizer):
    """FRUGAL optimizer (Adam on a subspace, signSGD or SGD on the rest).

    Parameters
    ----------
    params : iterable
    lr : float
        Learning rate of the state-full (Adam) part.
    density : float, default=0.25
        Fraction of the state-full subspace (rank fraction, or of tensors for blockwise).
    update_gap : int, default=200
        Steps between subspace refreshes.
    projection : {"random", "svd", "blockwise"}, default="random"
    residual : {"signsgd", "sgd"}, default="signsgd"
    betas : (float, float), default=(0.9, 0.999)
    eps : float, default=1e-8
    weight_decay : float, default=0.0
        Decoupled: ``p *= 1 - lr * weight_decay``.
    free_lr : float, optional
        Learning rate of the state-free part (default ``lr``).
    seed : int, default=0
        Seed of the random projections / block choices.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import FRUGAL
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(8, 4)
    >>> opt = FRUGAL(model.parameters(), lr=1e-3, density=0.25, projection="svd")
    >>> x, y = torch.randn(16, 8), torch.randn(16, 4)
    >>> for _ in range(2):
    ...     opt.zero_grad()
    ...     torch.nn.functional.mse_loss(model(x), y).backward()
    ...     _ = opt.step()
    >>> opt.state[model.weight]["exp_avg"].shape  # rank 1 of the 4 x 8 weight
    torch.Size([1, 8])
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float,
        density: float = 0.25,
        update_gap: int = 200,
        projection: str = "random",
        residual: str = "signsgd",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        free_lr: float | None = None,
        seed: int = 0,
    ) -> None:
        if projection not in ("random", "svd", "blockwise"):
            raise InvalidInputError(f"projection must be 'random', 'svd' or 'blockwise', got {projection!r}")
        if residual not in ("signsgd", "sgd"):
            raise InvalidInputError(f"residual must be 'signsgd' or 'sgd', got {residual!r}")
        check_int(update_gap, "update_gap", low=1)
        check_int(seed, "seed", low=0)
        self.projection, self.residual, self.update_gap, self.seed = projection, residual, update_gap, seed
        defaults = dict(
            lr=lr, density=density, betas=betas, eps=eps, weight_decay=weight_decay,
            free_lr=lr if free_lr is None else free_lr,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            grp = self.param_groups[-1]
            check_float(grp["lr"], "lr", low=0.0)
            check_float(grp["free_lr"], "free_lr", low=0.0)
            check_float(grp["density"], "density", low=0.0, low_inclusive=False, high=1.0)
            check_float(grp["eps"], "eps", low=0.0)
            check_float(grp["weight_decay"], "weight_decay", low=0.0)
            grp["betas"] = check_betas(grp["betas"])

    def _rank(self, p: torch.Tensor, density: float) -> int:
        return max(1, int(round(density * min(p.shape))))

    def _refresh(self, k: int, pairs: list[tuple[dict[str, Any], torch.Tensor]]) -> None:
        gen = step_generator(self.seed, k)
        if self.projection == "blockwise":
            n = len(pairs)
            density = pairs[0][0]["density"]
            chosen = set(torch.randperm(n, generator=gen)[: max(1, math.ceil(density * n))].tolist())
        for i, (grp, p) in enumerate(pairs):
            st = self.state[p]
            if self.projection == "blockwise":
                keep = i in chosen and st.get("active", False)  # still state-full: keep moments
                st["active"] = i in chosen
            else:
                keep = p.dim() != 2  # full Adam on non-matrix parameters throughout
            if not keep:
                for key in ("exp_avg", "exp_avg_sq"):
                    st.pop(key, None)
                st["step"] = 0
            if self.projection == "blockwise" or p.dim() != 2:
                continue
            r = self._rank(p, grp["density"])
            side = _side(p.shape, "std")
            assert p.grad is not None  # only parameters with gradients are passed in
            g = p.grad.to(compute_dtype(p))
            if self.projection == "svd":
                st["proj"] = galore_orthogonal(g, r, side)[0]
            else:
                dim = p.shape[1] if side == "right" else p.shape[0]
                q, _ = torch.linalg.qr(torch.randn(dim, r, generator=gen, dtype=torch.float64))
                q = q.to(dtype=g.dtype, device=p.device)
                st["proj"] = q.t().contiguous() if side == "right" else q

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One FRUGAL step (``closure`` optional, re-evaluates the loss with backward)."""
        loss = closure_loss(closure)
        pairs = grad_pairs(self.param_groups)
        if not pairs:
            return loss
        head = self.state[self.param_groups[0]["params"][0]]
        k = int(head.get("frugal_step", 0))
        if k % self.update_gap == 0:
            self._refresh(k, pairs)
        head["frugal_step"] = k + 1
        for grp, p in pairs:
            st = self.state[p]
            w = working_copy(p)
            G = p.grad.to(w.dtype)
            if grp["weight_decay"] > 0:
                w.mul_(1 - grp["lr"] * grp["weight_decay"])
            if self.projection == "blockwise" and not st.get("active", True):
                w.sub_(self._free(grp, G))
            elif "proj" not in st:  # a state-full block, or a non-matrix parameter
                w.sub_(self._adam(st, grp, G))
            else:
                P, side = [st["proj"]], _side(p.shape, "std")
                low = galore_project(G, P, side)
                w.sub_(galore_project_back(self._adam(st, grp, low), P, side, 1.0))
                w.sub_(self._free(grp, G - galore_project_back(low, P, side, 1.0)))
            write_back(p, w)
        return loss

    def _free(self, grp: dict[str, Any], rest: torch.Tensor) -> torch.Tensor:
        """The state-free update of the remainder: signSGD or SGD."""
        return grp["free_lr"] * (torch.sign(rest) if self.residual == "signsgd" else rest)

    def _adam(self, st: dict[str, Any], grp: dict[str, Any], g: torch.Tensor) -> torch.Tensor:
        """lr times the bias-corrected Adam direction for ``g`` (state in ``st``)."""
        b1, b2 = grp["betas"]
        if "exp_avg" not in st:
            st["exp_avg"] = torch.zeros_like(g)
            st["exp_avg_sq"] = torch.zeros_like(g)
        st["step"] = int(st.get("step", 0)) + 1
        t = st["step"]
        st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = st["exp_avg"] / (1 - b1**t)
        v_hat = st["exp_avg_sq"] / (1 - b2**t)
        return grp["lr"] * m_hat / (v_hat.sqrt() + grp["eps"])
