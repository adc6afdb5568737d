"""Training throughput in the logs: FLOPs per step, achieved FLOP/s and MFU, compile time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax

from s2s_jax.profiling import count_flops, mfu, peak_flops


class FlopsMeter:
    """FLOPs of each train step, counted once per batch shape on the step's jaxpr.

    The count includes scan bodies times their length (XLA's cost analysis counts them once);
    the peak is measured (CPU) or known per device kind, or ``profile.peak_flops`` if set.
    """

    def __init__(self, train_step: Callable, *, dtype: str, peak_override: float, devices: int):
        self._train_step = train_step
        self._by_shape: dict[tuple, float] = {}
        self._peak = None
        self._dtype, self._override, self.devices = dtype, peak_override, devices

    def flops(self, state: Any, batch: dict, rng: jax.Array) -> float:
        """FLOPs of ``train_step(state, batch, rng)`` (global, all devices together)."""
        key = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if key not in self._by_shape:
            self._by_shape[key] = count_flops(self._train_step, state, batch, rng)
        return self._by_shape[key]

    def summary(self, flops: float, seconds: float) -> dict[str, float]:
        """``flops_per_sec`` and ``mfu`` for ``flops`` done in ``seconds`` of training."""
        if self._peak is None:
            self._peak = peak_flops(dtype=self._dtype, override=self._override).flops_per_sec
        seconds = max(seconds, 1e-9)
        return {
            "flops_per_sec": flops / seconds,
            "mfu": mfu(flops, seconds, self._peak, self.devices),
        }


def timed_first_step(train_step: Callable, *args) -> tuple[Any, float]:
    """Runs the first step, blocking, and returns (outputs, seconds incl. compilation)."""
    start = time.perf_counter()
    out = jax.block_until_ready(train_step(*args))
    return out, time.perf_counter() - start
