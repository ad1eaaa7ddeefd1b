"""Weight averaging on state_dicts: uniform and greedy model soups (Wortsman et al.,
2022), Model Stock (Jang et al., 2024) and momentum weight interpolation for continual
fine-tuning (Stojanovski et al., 2022).

Floating entries are averaged in float32 (float64 stays float64) and cast back; other
entries (integer buffers) are taken from the first state_dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_float
from .._errors import InvalidInputError

__all__ = ["uniform_soup", "greedy_soup", "model_stock", "WeightInterpolation"]

StateDict = Mapping[str, torch.Tensor]


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_same(state_dicts: Sequence[StateDict], what: str, minimum: int = 1) -> None:
    if len(state_dicts) < minimum:
        raise InvalidInputError(f"{what} needs at least {minimum} state_dict(s), got {len(state_dicts)}")
    keys = list(state_dicts[0].keys())
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd.keys()) != keys:
            raise InvalidInputError(f"state_dict {i} has different keys from state_dict 0")
        for k in keys:
            if sd[k].shape != state_dicts[0][k].shape:
                raise InvalidInputError(
                    f"entry {k!r}: shape {tuple(sd[k].shape)} differs from {tuple(state_dicts[0][k].shape)}"
                )


def uniform_soup(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the state_dicts (a uniform soup).

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.averaging import uniform_soup
    >>> uniform_soup([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])
    {'w': tensor([2., 4.])}
    """
    _check_same(state_dicts, "uniform_soup")
    out = {}
    for k, v in state_dicts[0].items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        acc = torch.zeros(v.shape, dtype=_acc_dtype(v), device=v.device)
        for sd in state_dicts:
            acc += sd[k].to(acc.dtype)
        out[k] = (acc / len(state_dicts)).to(v.dtype)
    return out


def greedy_soup(
    state_dicts: Sequence[StateDict],
    evaluate: Callable[[dict[str, torch.Tensor]], float],
) -> dict[str, torch.Tensor]:
    """Greedy soup: sort the models by ``evaluate`` (held-out accuracy, higher is better),
    start from the best and add each next one only if the soup's score strictly improves.

    ``evaluate`` is called ``2 * len(state_dicts) - 1`` times.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.averaging import greedy_soup
    >>> sds = [{"w": torch.tensor([0.0])}, {"w": torch.tensor([2.0])}, {"w": torch.tensor([9.0])}]
    >>> greedy_soup(sds, lambda sd: -abs(float(sd["w"]) - 1.2))  # best near 1.2
    {'w': tensor([1.])}
    """
    _check_same(state_dicts, "greedy_soup")
    scores = [float(evaluate(dict(sd))) for sd in state_dicts]
    order = sorted(range(len(state_dicts)), key=lambda i: -scores[i])
    chosen = [state_dicts[order[0]]]
    best = scores[order[0]]
    soup = uniform_soup(chosen)
    for i in order[1:]:
        candidate = uniform_soup(chosen + [state_dicts[i]])
        score = float(evaluate(candidate))
        if score > best:
            chosen.append(state_dicts[i])
            best, soup = score, candidate
    return soup


def model_stock(pretrained: StateDict, finetuned: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Model Stock: per entry, interpolate between the fine-tuned mean and the pretrained
    weights by ``t = k cos / (1 + (k - 1) cos)``, ``cos`` the mean pairwise cosine of the
    fine-tuned deltas ``w_i - w_0`` (``t`` not clamped).

    Parameters
    ----------
    pretrained : state_dict
        ``w_0``.
    finetuned : sequence of state_dict
        ``k >= 2`` models fine-tuned from ``w_0``.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.averaging import model_stock
    >>> w0 = {"w": torch.zeros(2)}
    >>> out = model_stock(w0, [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 1.0])}])
    >>> out["w"]  # orthogonal deltas: cos = 0, so t = 0 and the result is w0
    tensor([0., 0.])
    """
    _check_same([pretrained, *finetuned], "model_stock", minimum=3)
    k = len(finetuned)
    out = {}
    for key, w0 in pretrained.items():
        if not w0.is_floating_point():
            out[key] = finetuned[0][key].clone()
            continue
        dt = _acc_dtype(w0)
        base = w0.to(dt)
        deltas = [(sd[key].to(dt) - base).reshape(-1) for sd in finetuned]
        cos = []
        for i in range(k):
            for j in range(i + 1, k):
                den = deltas[i].norm() * deltas[j].norm()
                cos.append(torch.dot(deltas[i], deltas[j]) / den if den > 0 else torch.zeros((), dtype=dt))
        c = torch.stack(cos).mean()
        t = k * c / (1 + (k - 1) * c)
        mean = torch.stack([sd[key].to(dt) for sd in finetuned]).mean(0)
        out[key] = (t * mean + (1 - t) * base).to(w0.dtype)
    return out


class WeightInterpolation:
    """Momentum-based weight interpolation: slow weights ``theta_s <- m * theta_s +
    (1 - m) * theta`` after every update of the fine-tuned ``model`` (evaluate the slow
    weights to forget less in continual fine-tuning).

    Parameters
    ----------
    model : torch.nn.Module
    momentum : float
        In [0, 1]; 0 copies the fast weights, 1 keeps the initial ones.

    Examples
    --------
    >>> import torch
    >>> from thrifty.torch.averaging import WeightInterpolation
    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.fill_(0.0)
    >>> wi = WeightInterpolation(model, momentum=0.9)
    >>> with torch.no_grad():
    ...     _ = model.weight.fill_(1.0)
    >>> wi.step()
    >>> wi.averaged_state_dict()["weight"]
    tensor([[0.1000]])
    """

    def __init__(self, model: nn.Module, momentum: float) -> None:
        self.momentum = check_float(momentum, "momentum", low=0.0, high=1.0)
        self.model = model
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def step(self) -> None:
        """Fold the model's current weights into the slow weights."""
        m = self.momentum
        for k, v in self.model.state_dict().items():
            s = self.slow[k]
            if s.is_floating_point():
                s.mul_(m).add_(v.to(s.dtype), alpha=1 - m)
            else:
                s.copy_(v)

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the slow weights, loadable into the model."""
        return {k: v.clone() for k, v in self.slow.items()}

    def averaged_model(self) -> nn.Module:
        """A deep copy of the model holding the slow weights."""
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.slow)
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "slow": self.averaged_state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.momentum = check_float(state_dict["momentum"], "momentum", low=0.0, high=1.0)
        self.slow = {k: v.clone() for k, v in state_dict["slow"].items()}
