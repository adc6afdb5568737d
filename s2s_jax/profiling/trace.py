"""jax.profiler traces of chosen training steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax


class Tracer:
    """Captures one ``jax.profiler`` trace covering steps ``start <= step < stop``.

    Call ``step(n)`` before running step ``n``; the trace starts before step ``start`` and stops
    before step ``stop`` (or on ``close``). Files land under ``workdir/profile/`` in the
    TensorBoard profile plugin layout (``plugins/profile/<run>/*.xplane.pb``, plus
    ``perfetto_trace.json.gz`` with ``perfetto=True``)::

        with Tracer(workdir, config.profile.trace_steps) as tracer:
            for step in range(first, last + 1):
                tracer.step(step, wait_for=state)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = train_step(state, next(batches), rng)
            tracer.close(wait_for=state)

    Args:
      workdir: the run directory.
      trace_steps: ``(start, stop)``, or ``()`` to trace nothing.
      perfetto: also write a Perfetto/Chrome ``perfetto_trace.json.gz``.
    """

    def __init__(
        self, workdir: str | Path, trace_steps: Sequence[int] = (), *, perfetto: bool = False
    ):
        self.directory = Path(workdir) / "profile"
        self.window = _check_window(trace_steps)
        self.perfetto = perfetto
        self.traced_steps: list[int] = []
        self._active = False
        self._done = not self.window

    def step(self, step: int, wait_for: Any = None) -> None:
        """Starts or stops the trace as step ``step`` is about to run.

        Args:
          step: the step about to run.
          wait_for: a pytree of arrays (e.g. the train state) to wait for before stopping, so
            the asynchronously dispatched work of the traced steps ends inside the trace.
        """
        if self._active and step >= self.window[1]:
            self.close(wait_for)
        elif not self._done and not self._active and self.window[0] <= step < self.window[1]:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=self.perfetto)
            self._active = True
        if self._active:
            self.traced_steps.append(step)

    def close(self, wait_for: Any = None) -> None:
        """Stops the trace if one is running (a run that ends inside the window)."""
        if not self._active:
            return
        if wait_for is not None:
            jax.block_until_ready(wait_for)
        jax.profiler.stop_trace()
        self._active, self._done = False, True

    def trace_files(self) -> list[Path]:
        """The trace files written so far (``*.xplane.pb`` and ``*.json.gz``)."""
        patterns = ("*.xplane.pb", "*.json.gz")
        return sorted(p for pattern in patterns for p in self.directory.rglob(pattern))

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_window(trace_steps: Sequence[int]) -> tuple[int, ...]:
    window = tuple(int(s) for s in trace_steps)
    if window and (len(window) != 2 or not 0 <= window[0] < window[1]):
        raise ValueError(
            f"profile.trace_steps must be () or (start, stop) with 0 <= start < stop, got "
            f"{tuple(trace_steps)!r}; e.g. (10, 13) traces steps 10, 11 and 12."
        )
    return window
