"""Validation, reduction and chunking shared by the loss families (private)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..._errors import InvalidInputError
from ..._validation import check_choice, check_float, check_int

_REDUCTIONS = ("mean", "sum", "none")
# Elements per row chunk of the large-vocabulary losses (16 MiB of float32). Smaller
# chunks keep temporaries in cache but multiply small parallel ops, which stall badly
# when the CPU is oversubscribed.
_CHUNK_ELEMENTS = 1 << 22


def _check_reduction(reduction: str) -> None:
    check_choice(reduction, "reduction", _REDUCTIONS)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _float_tensor(x: Any, name: str, *, min_ndim: int = 1) -> Tensor:
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < min_ndim:
        raise InvalidInputError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise InvalidInputError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _upcast(x: Tensor) -> Tensor:
    return x.to(_compute_dtype(x.dtype))


def _check_labels(
    target: Any, shape: tuple[int, ...], n_classes: int, name: str = "target", *, ignore_index: int | None = None
) -> Tensor:
    if not isinstance(target, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise InvalidInputError(f"{name} must hold integer class indices, got {target.dtype}")
    if tuple(target.shape) != tuple(shape):
        raise InvalidInputError(f"{name} has shape {tuple(target.shape)}, expected {tuple(shape)}")
    if target.numel():
        checked = target if ignore_index is None else target[target != ignore_index]
        if checked.numel():
            lo, hi = torch.stack([checked.min(), checked.max()]).tolist()
            if lo < 0 or hi >= n_classes:
                extra = "" if ignore_index is None else f" (and is not ignore_index={ignore_index})"
                raise InvalidInputError(
                    f"{name} holds class {lo if lo < 0 else hi}, outside [0, {n_classes}){extra}")
    return target.long()


def _check_ignore_index(ignore_index: Any) -> int:
    return check_int(ignore_index, "ignore_index")


def _logits_target(
    logits: Any, target: Any, *, min_classes: int = 1, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor | None, tuple[int, ...]]:
    """Validate ``(*, C)`` logits and ``(*)`` labels.

    Returns the ``(N, C)`` logits, the ``(N,)`` labels with ignored entries replaced by
    class 0 (so they can be gathered), the ``(N,)`` boolean mask of the rows that count
    (``None`` when no label equals ``ignore_index``) and the batch shape ``*``.
    """
    logits = _float_tensor(logits, "logits", min_ndim=2)
    ignore_index = _check_ignore_index(ignore_index)
    c = logits.shape[-1]
    if c < min_classes:
        raise InvalidInputError(f"logits need at least {min_classes} classes, got {c}")
    batch = tuple(logits.shape[:-1])
    target = _check_labels(target, batch, c, ignore_index=ignore_index).reshape(-1)
    valid: Tensor | None = target != ignore_index
    if bool(valid.all()):  # type: ignore[union-attr]
        valid = None
    else:
        target = target.masked_fill(~valid, 0)  # type: ignore[operator]
    return logits.reshape(-1, c), target, valid, batch


def _reduce_valid(loss: Tensor, valid: Tensor | None, batch: tuple[int, ...], reduction: str) -> Tensor:
    """Zero the ignored rows and reduce; "mean" divides by the number of rows that count
    (as ``F.cross_entropy``) and is 0, with a zero gradient, when every row is ignored."""
    if valid is None:
        return _reduce(loss.reshape(batch), reduction)
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp(min=1).to(loss.dtype)
    return _reduce(loss.reshape(batch), reduction)


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    return check_float(value, name, low=0.0, low_inclusive=allow_zero)


def _ignored_rows(valid: Tensor | None) -> Tensor | None:
    return None if valid is None else torch.nonzero(~valid).squeeze(1)


def _row_chunks(n: int, c: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(c, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]
