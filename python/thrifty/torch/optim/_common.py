"""Shared helpers of the optimizers: the Adam ``betas`` check, precision and closures
(private). Scalar options are checked with :mod:`thrifty._validation`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..._errors import InvalidInputError
from ..._validation import check_float

__all__ = ["Optimizer", "check_betas", "compute_dtype", "InvalidInputError"]


class Optimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` whose ``load_state_dict`` keeps the saved dtype of
    every state tensor.

    torch casts floating state to each parameter's dtype on load; thrifty's optimizers
    keep the state of float16/bfloat16 parameters (moments, master copies, projections)
    in float32, and a resumed run must continue from exactly that state.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            for key, v in state_dict["state"].get(i, {}).items():
                cur = self.state[p].get(key)
                if isinstance(v, torch.Tensor) and isinstance(cur, torch.Tensor) and v.dtype != cur.dtype:
                    self.state[p][key] = v.to(device=cur.device, copy=True)


def check_betas(betas: Any) -> tuple[float, float]:
    """Validate an Adam ``betas`` pair, each in [0, 1)."""
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise InvalidInputError(f"betas must be a pair of numbers, got {betas!r}") from None
    return (
        check_float(b1, "betas[0]", low=0.0, high=1.0, high_inclusive=False),
        check_float(b2, "betas[1]", low=0.0, high=1.0, high_inclusive=False),
    )


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype for a parameter: float32 for half precision, else its own dtype."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return t.dtype


def closure_loss(closure: Callable[[], Any] | None) -> Any:
    """The loss from ``closure`` evaluated with gradients enabled, or None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def grad_pairs(param_groups: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    """``(group, parameter)`` for every parameter that has a gradient, in group order
    (a parameter is ``Any``, as torch types ``group["params"]``)."""
    return [(g, p) for g in param_groups for p in g["params"] if p.grad is not None]


def working_copy(p: torch.Tensor) -> torch.Tensor:
    """``p`` detached, for in-place arithmetic: its own storage, or a float32 copy of a
    half-precision parameter (store that with :func:`write_back`)."""
    work = compute_dtype(p)
    return p.detach() if work == p.dtype else p.detach().to(work)


def write_back(p: torch.Tensor, x: torch.Tensor) -> None:
    """Store ``x`` from :func:`working_copy` in ``p`` when it is a float32 copy."""
    if x.dtype != p.dtype:
        p.copy_(x)


@contextmanager
def rollback_on_error(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Undo ``add_param_group`` when the new group fails validation.

    ``torch.optim.Optimizer.add_param_group`` appends the group before subclasses can
    check their hyper-parameters; without this, a rejected group would stay in
    ``param_groups`` and take part in the next step.
    """
    n = len(optimizer.param_groups)
    try:
        yield
    except BaseException:
        del optimizer.param_groups[n:]
        raise


def compiling() -> bool:
    """Whether torch.compile is tracing the caller."""
    comp = getattr(torch, "compiler", None)
    return bool(comp is not None and hasattr(comp, "is_compiling") and comp.is_compiling())


def stacked_views(states: list[dict[str, Any]], key: str) -> torch.Tensor | None:
    """The vector whose elements ``i`` are ``states[i][key]``, when every entry is still
    that view (see :func:`stack_views`; a state dict loaded from a file or a new
    parameter breaks it); else None. Fused steps then update all entries with one
    operation."""
    if not states or states[0].get(key) is None:
        return None
    vec = states[0][key]._base
    if vec is None or vec.shape != (len(states),):
        return None
    for i, st in enumerate(states):
        v = st.get(key)
        if v is None or v._base is not vec or v.storage_offset() != i:
            return None
    return vec


def stack_views(states: list[dict[str, Any]], key: str) -> torch.Tensor:
    """Replace the scalar tensors ``states[i][key]`` by views of one new vector (same
    values) and return the vector."""
    vec = torch.stack([st[key].reshape(()) for st in states])
    for i, st in enumerate(states):
        st[key] = vec[i]
    return vec
