"""Domain mixing by temperature sampling with a Cooldown schedule (``thrifty.data``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import _core
from .._errors import InvalidInputError
from .._validation import check_float, check_int
from ._common import check_seed

__all__ = ["TemperatureSampler"]


class TemperatureSampler:
    """Draw ``(domain, index)`` pairs with domain probabilities ``∝ n_i^(1/T)``.

    ``T = 1`` samples in proportion to domain size; larger ``T`` up-samples small
    domains (``T → ∞`` is uniform over domains). Following "Upsample or Upweight?"
    (Li et al.), temperature sampling converges faster than up-weighting the loss but
    over-fits small domains; their Cooldown starts hot and lowers the temperature
    during training. Here ``cooldown=(T_end, start, end)`` keeps ``temperature`` until
    step ``start``, moves linearly to ``T_end`` at step ``end`` and stays there
    (``start == end`` switches at once).

    Inside a domain, examples come in a keyed random order, each once per pass. Draw
    ``s`` depends only on ``(seed, s)`` and the per-domain counts, so
    :meth:`state_dict` / :meth:`load_state_dict` resume the stream exactly.

    Parameters
    ----------
    sizes : sequence of int
        Examples per domain (at least one positive).
    temperature : float
        Initial temperature (> 0).
    seed : int, default=0
    cooldown : tuple (T_end, start_step, end_step), optional

    Examples
    --------
    >>> s = TemperatureSampler([900, 100], temperature=2.0)
    >>> s.probabilities().round(3).tolist()
    [0.75, 0.25]
    >>> domains, indices = s.sample(5)
    >>> domains.shape, indices.shape
    ((5,), (5,))
    >>> s.loss_weights().round(3).tolist()  # weights for proportional sampling
    [0.833, 2.5]
    """

    def __init__(self, sizes: Sequence[int], *, temperature: float, seed: int = 0,
                 cooldown: tuple[float, int, int] | None = None) -> None:
        arr = np.asarray(sizes)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise InvalidInputError(f"sizes must be a non-empty 1-D sequence of integers, got {sizes!r}")
        if (arr < 0).any():
            raise InvalidInputError(f"sizes must be >= 0, got {arr.tolist()}")
        self.sizes = [int(v) for v in arr]
        self.temperature = check_float(temperature, "temperature", low=0.0, low_inclusive=False)
        self.seed = check_seed(seed)
        if cooldown is not None:
            if not isinstance(cooldown, (tuple, list)) or len(cooldown) != 3:
                raise InvalidInputError("cooldown must be a tuple (T_end, start_step, end_step)")
            t_end = check_float(cooldown[0], "cooldown T_end", low=0.0, low_inclusive=False)
            start = check_int(cooldown[1], "cooldown start_step", low=0)
            end = check_int(cooldown[2], "cooldown end_step", low=start)
            cooldown = (t_end, start, end)
        self.cooldown = cooldown
        # validates the combination (e.g. all-zero sizes)
        _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, 0)
        self._step = 0
        self._counts = np.zeros(len(self.sizes), dtype=np.uint64)

    @property
    def step(self) -> int:
        """Draws made so far."""
        return self._step

    def temperature_at(self, step: int | None = None) -> float:
        """The temperature at ``step`` (default: the current step)."""
        step = self._step if step is None else check_int(step, "step", low=0)
        return _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, step)[0]

    def probabilities(self, step: int | None = None) -> np.ndarray:
        """Domain probabilities at ``step`` (default: the current step)."""
        step = self._step if step is None else check_int(step, "step", low=0)
        return _core.data_temperature_probabilities(self.sizes, self.temperature, self.cooldown, step)[1]

    def loss_weights(self, domains: Any = None, *, step: int | None = None) -> np.ndarray:
        """Loss weights of the up-weighting (scalarization) alternative.

        For data drawn in proportion to domain size (``q_i = n_i / N``), weighting the
        loss of domain ``i`` by ``p_i(T) / q_i`` gives the same expected loss as
        temperature sampling. Returns the per-domain weights, or with ``domains`` (an
        array of domain ids) one weight per example.
        """
        step = self._step if step is None else check_int(step, "step", low=0)
        w = _core.data_temperature_loss_weights(self.sizes, self.temperature, self.cooldown, step)
        if domains is None:
            return w
        d = np.asarray(domains)
        if d.dtype.kind not in "iu" or ((d < 0) | (d >= len(self.sizes))).any():
            raise InvalidInputError(f"domains must be integer ids in [0, {len(self.sizes)})")
        return w[d]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw the next ``n`` pairs: ``(domains, indices)`` arrays, advancing the state."""
        n = check_int(n, "n", low=0)
        d, i, c = _core.data_temperature_sample(self.sizes, self.temperature, self.cooldown,
                                                self.seed, self._step, self._counts.tolist(), n)
        self._counts = c
        self._step += n
        return d, i

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Endless ``(domain, index)`` pairs (drawn in chunks)."""
        while True:
            d, i = self.sample(1024)
            for pair in zip(d.tolist(), i.tolist()):
                yield pair

    def state_dict(self) -> dict[str, Any]:
        """``{"step", "counts"}``: enough to resume the exact stream."""
        return {"step": self._step, "counts": self._counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`."""
        try:
            step = check_int(state["step"], "state['step']", low=0)
            counts = np.asarray(state["counts"], dtype=np.uint64)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InvalidInputError("state must come from TemperatureSampler.state_dict()") from None
        if counts.shape != (len(self.sizes),):
            raise InvalidInputError(f"state has {counts.size} counts for {len(self.sizes)} domains")
        self._step, self._counts = step, counts


