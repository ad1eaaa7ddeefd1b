"""Optimizers from the papers, in the shape of :mod:`torch.optim`.

Each optimizer subclasses :class:`torch.optim.Optimizer`, supports param groups and
``state_dict()`` round trips (loadable with ``torch.load(..., weights_only=True)``), does
half-precision arithmetic in float32, and rejects bad hyper-parameters with
:class:`thrifty.InvalidInputError` (a ``ValueError``).
"""

from __future__ import annotations

from .dog import DoG, LDoG, PolynomialDecayAverager, dog_step_size
from .frugal import FRUGAL
from .galore import FiraAdamW, GaLoreAdamW, galore_orthogonal, galore_project, galore_project_back
from .gsm import GlobalSparseMomentumSGD, GradientNoise, gsm_mask
from .mezo import MeZO
from .momo import MoMo, MoMoAdam
from .sam import SAM, disable_running_stats, enable_running_stats, frozen_running_stats, sam_perturbation

__all__ = [
    "SAM",
    "sam_perturbation",
    "disable_running_stats",
    "enable_running_stats",
    "frozen_running_stats",
    "DoG",
    "LDoG",
    "dog_step_size",
    "PolynomialDecayAverager",
    "GaLoreAdamW",
    "FiraAdamW",
    "galore_orthogonal",
    "galore_project",
    "galore_project_back",
    "MoMo",
    "MoMoAdam",
    "MeZO",
    "GlobalSparseMomentumSGD",
    "gsm_mask",
    "GradientNoise",
    "FRUGAL",
]
