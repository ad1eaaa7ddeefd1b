"""The scikit-learn parameter protocol shared by thrifty's estimators."""

from __future__ import annotations

from typing import Any, TypeVar

from ._errors import InvalidInputError

__all__ = ["ParamsMixin"]

_E = TypeVar("_E", bound="ParamsMixin")


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``__repr__`` over the names in ``_param_names``.

    Subclasses list their constructor parameters in ``_param_names``; ``__init__`` stores
    each under the same attribute name and does nothing else (scikit-learn convention),
    so ``sklearn.base.clone`` and grid searches work.
    """

    _param_names: tuple[str, ...] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self: _E, **params: Any) -> _E:
        """Set constructor parameters (scikit-learn protocol); returns self."""
        for name, value in params.items():
            if name not in self._param_names:
                raise InvalidInputError(f"unknown parameter {name!r} for {type(self).__name__}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._param_names)
        return f"{type(self).__name__}({args})"
