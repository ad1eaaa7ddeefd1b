"""Learning-rate schedules stepped once per update: warmup-stable-decay (WSD) and the
"infinite" schedule for continual pre-training.

Both are :class:`torch.optim.lr_scheduler.LRScheduler` objects that multiply every
group's initial learning rate by a factor of the step; their ``state_dict()`` round-trips.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from .._errors import InvalidInputError
from .._validation import check_float, check_int

__all__ = ["WSD", "InfiniteLR", "wsd", "infinite"]


class _FactorLR(LRScheduler):
    def factor(self, step: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = self.factor(self.last_epoch)
        return [float(base) * f for base in self.base_lrs]


class WSD(_FactorLR):
    """Warmup-stable-decay; see :func:`wsd`."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        total_steps: int,
        cooldown_fraction: float = 0.2,
        cooldown: str = "linear",
        final_lr_ratio: float = 0.0,
    ) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
        self.total_steps = check_int(total_steps, "total_steps", low=1)
        frac = check_float(cooldown_fraction, "cooldown_fraction", low=0.0, high=1.0)
        self.cooldown_steps = int(round(frac * total_steps))
        if self.warmup_steps + self.cooldown_steps > self.total_steps:
            raise InvalidInputError(
                f"warmup_steps ({warmup_steps}) + cooldown steps ({self.cooldown_steps}) exceed total_steps "
                f"({total_steps})"
            )
        if cooldown not in ("linear", "1-sqrt"):
            raise InvalidInputError(f"cooldown must be 'linear' or '1-sqrt', got {cooldown!r}")
        self.cooldown = cooldown
        self.final_lr_ratio = check_float(final_lr_ratio, "final_lr_ratio", low=0.0, high=1.0)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate for update ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        start = self.total_steps - self.cooldown_steps
        if step < start:
            return 1.0
        r = self.final_lr_ratio
        if step >= self.total_steps - 1 or self.cooldown_steps == 0:
            return r if self.cooldown_steps else 1.0
        u = (step - start + 1) / self.cooldown_steps
        if self.cooldown == "linear":
            return 1.0 - (1.0 - r) * u
        return r + (1.0 - r) * (1.0 - math.sqrt(u))


def wsd(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    cooldown_fraction: float = 0.2,
    cooldown: str = "linear",
    final_lr_ratio: float = 0.0,
) -> WSD:
    """Warmup-stable-decay schedule (linear or ``1-sqrt`` cooldown), stepped per update.

    Factor of step ``s``: ``(s + 1) / warmup_steps`` during warmup, 1 until the last
    ``round(cooldown_fraction * total_steps)`` steps, then down to ``final_lr_ratio``,
    reached exactly at the last step ``total_steps - 1`` (and kept after it).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.schedules import wsd
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = wsd(opt, warmup_steps=2, total_steps=10, cooldown_fraction=0.4)
    >>> lrs = []
    >>> for _ in range(10):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    return WSD(
        optimizer,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        cooldown_fraction=cooldown_fraction,
        cooldown=cooldown,
        final_lr_ratio=final_lr_ratio,
    )


class InfiniteLR(_FactorLR):
    """The infinite schedule; see :func:`infinite`. Call :meth:`start_anneal` to anneal."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        cooldown_steps: int,
        constant_ratio: float,
        anneal_steps: int,
        final_lr_ratio: float = 0.0,
    ) -> None:
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
        self.cooldown_steps = check_int(cooldown_steps, "cooldown_steps", low=0)
        self.constant_ratio = check_float(constant_ratio, "constant_ratio", low=0.0, low_inclusive=False, high=1.0)
        self.anneal_steps = check_int(anneal_steps, "anneal_steps", low=1)
        self.final_lr_ratio = check_float(final_lr_ratio, "final_lr_ratio", low=0.0, high=self.constant_ratio)
        self.anneal_start: int | None = None
        super().__init__(optimizer)

    def start_anneal(self) -> None:
        """Begin the final anneal now: the next update already uses the annealed rate."""
        if self.anneal_start is None:
            self.anneal_start = self.last_epoch
            lrs = self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            self._last_lr = list(lrs)  # type: ignore[assignment]

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at update ``step`` (0-based)."""
        c = self.constant_ratio
        if self.anneal_start is not None and step >= self.anneal_start:
            u = min(1.0, (step - self.anneal_start + 1) / self.anneal_steps)
            return c - (c - self.final_lr_ratio) * u
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        s = step - self.warmup_steps
        if s < self.cooldown_steps:
            return c + (1.0 - c) * 0.5 * (1.0 + math.cos(math.pi * (s + 1) / self.cooldown_steps))
        return c


def infinite(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    cooldown_steps: int,
    constant_ratio: float,
    anneal_steps: int,
    final_lr_ratio: float = 0.0,
) -> InfiniteLR:
    """Infinite learning-rate schedule (Ibrahim et al., 2024): linear warmup, cosine
    cooldown to ``constant_ratio``, constant for as long as training goes on, and a linear
    anneal to ``final_lr_ratio`` over ``anneal_steps`` once :meth:`InfiniteLR.start_anneal`
    is called. Stepped per update.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.schedules import infinite
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = infinite(opt, warmup_steps=1, cooldown_steps=2, constant_ratio=0.5, anneal_steps=2)
    >>> lrs = []
    >>> for k in range(7):
    ...     if k == 4:
    ...         sched.start_anneal()
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [1.0, 0.75, 0.5, 0.5, 0.25, 0.0, 0.0]
    """
    return InfiniteLR(
        optimizer,
        warmup_steps=warmup_steps,
        cooldown_steps=cooldown_steps,
        constant_ratio=constant_ratio,
        anneal_steps=anneal_steps,
        final_lr_ratio=final_lr_ratio,
    )
