"""MeZO: memory-efficient zeroth-order SGD (Malladi et al., 2023).

Per step, with ``z ~ N(0, I)`` regenerated from a per-step seed instead of stored::

    w += eps z; l+ = L(w); w -= 2 eps z; l- = L(w); w += eps z
    g = (l+ - l-) / (2 eps);  w -= lr * (g z + weight_decay * w)

No gradient, no parameter-sized buffer. Two noise sources (``rng``):

- ``"torch"``: ``z`` is drawn tensor by tensor from a dedicated ``torch.Generator``
  (the global RNG is untouched);
- ``"philox"``: ``z`` comes from a counter-based generator (Philox4x32-10 and
  Box-Muller), keyed by (seed, step, tensor position, element index). On CUDA
  parameters, when :func:`thrifty.torch.cuda_available`, each phase is one fused in-place kernel per
  tensor (no noise tensor, the projected gradient never leaves the device, restore and
  update fused into one pass); elsewhere a chunked CPU implementation of the same
  arithmetic gives the same bits.

``rng="auto"`` (default) is ``"philox"`` when every parameter is a float32/float16/
bfloat16 CUDA tensor and the CUDA kernels can run, else ``"torch"``. CPU and CUDA runs agree
only when both use ``rng="philox"``. Put biases and norm weights in a group
with ``weight_decay=0`` (MeZO does not decay them). Run the model in eval mode (no
dropout) inside the closure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..._validation import check_float, check_int
from ._common import InvalidInputError, Optimizer, compute_dtype, rollback_on_error
from ._rng import StepGenerators

__all__ = ["MeZO"]


class MeZO(Optimizer):
    """Zeroth-order SGD with in-place seeded perturbations.

    Parameters
    ----------
    params : iterable
    lr : float
        Learning rate (MeZO uses 1e-6 / 1e-7 for full fine-tuning).
    eps : float, default=1e-3
        Perturbation scale.
    weight_decay : float, default=0.0
    seed : int, default=0
        The run's seed; step ``k`` uses a generator seeded from ``(seed, k)``.
    rng : {"auto", "torch", "philox"}, default="auto"
        The noise source (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.optim import MeZO
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    >>> opt = MeZO([w], lr=0.1, eps=1e-3, seed=0)
    >>> loss = opt.step(lambda: (w**2).sum())  # the closure only evaluates the loss
    >>> opt.state[w]["projected_grad"].shape
    torch.Size([])
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        rng: str = "auto",
    ) -> None:
        check_int(seed, "seed", low=0, high=(1 << 63) - 1)
        if rng not in ("auto", "torch", "philox"):
            raise InvalidInputError(f"rng must be 'auto', 'torch' or 'philox', got {rng!r}")
        self.seed = seed
        self.rng = rng
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with rollback_on_error(self):
            super().add_param_group(param_group)
            grp = self.param_groups[-1]
            check_float(grp["lr"], "lr", low=0.0)
            check_float(grp["eps"], "eps", low=0.0, low_inclusive=False)
            check_float(grp["weight_decay"], "weight_decay", low=0.0)

    def _params(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _z(self, gens: StepGenerators, p: torch.Tensor) -> torch.Tensor:
        return torch.randn(p.shape, generator=gens(p.device), dtype=compute_dtype(p), device=p.device)

    def _perturb(self, step: int, scale: float) -> None:
        gen = StepGenerators(self.seed, step)
        for grp, p in self._params():
            z = self._z(gen, p)
            if z.dtype == p.dtype:
                p.add_(z, alpha=scale * grp["eps"])
            else:
                p.copy_(p.to(z.dtype).add_(z, alpha=scale * grp["eps"]))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One MeZO step. ``closure`` returns the loss (no backward); returns ``l+``."""
        if closure is None:
            raise InvalidInputError("MeZO.step requires a closure that returns the loss (no backward)")
        pairs = self._params()
        if not pairs:
            return None
        st = self.state[pairs[0][1]]
        k = int(st.get("mezo_step", 0))
        if self._use_philox([p for _, p in pairs]):
            return self._philox_step(closure, pairs, st, k)
        self._perturb(k, 1.0)
        loss_pos = torch.as_tensor(closure()).detach()
        self._perturb(k, -2.0)
        loss_neg = torch.as_tensor(closure()).detach()
        self._perturb(k, 1.0)
        eps = pairs[0][0]["eps"]
        pg = (loss_pos - loss_neg) / (2 * eps)
        gen = StepGenerators(self.seed, k)
        for grp, p in pairs:
            z = self._z(gen, p)
            g = pg.to(z.dtype) * z
            w = p if z.dtype == p.dtype else p.to(z.dtype)
            if grp["weight_decay"] > 0:
                g = g + grp["weight_decay"] * w
            if w is p:
                p.sub_(grp["lr"] * g)
            else:
                p.copy_(w - grp["lr"] * g)
        st["mezo_step"] = k + 1
        st["projected_grad"] = pg
        return loss_pos

    def _use_philox(self, params: list[torch.Tensor]) -> bool:
        if self.rng != "auto":
            return self.rng == "philox"
        from .._cuda import _runtime

        half_or_single = (torch.float32, torch.float16, torch.bfloat16)
        return all(p.dtype in half_or_single for p in params) and _runtime.use_kernels(*params)

    def _philox_step(
        self, closure: Callable[[], Any], pairs: list[tuple[dict[str, Any], torch.Tensor]], st: dict[str, Any], k: int
    ) -> Any:
        from .._cuda import mezo as fused

        ps = [p for _, p in pairs]
        eps = [g["eps"] for g, _ in pairs]
        kw: dict[str, Any] = dict(seed=self.seed, step=k, eps=eps)
        fused.perturb_(ps, scale=1.0, **kw)
        loss_pos = torch.as_tensor(closure()).detach()
        fused.perturb_(ps, scale=-2.0, **kw)
        loss_neg = torch.as_tensor(closure()).detach()
        pg = (loss_pos - loss_neg) / (2 * pairs[0][0]["eps"])
        fused.update_(ps, projected_grad=pg, lr=[g["lr"] for g, _ in pairs],
                      weight_decay=[g["weight_decay"] for g, _ in pairs], **kw)
        st["mezo_step"] = k + 1
        st["projected_grad"] = pg
        return loss_pos
