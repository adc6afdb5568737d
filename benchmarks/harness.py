"""Systems under test and the alternating timer that measures them side by side.

Every system (s2s_jax or a peer) is reduced to one synchronous call doing one unit of work: a
training step (forward + backward + update) or one decode of the whole source batch. The timer
warms every system up, then runs rounds in which each system in turn does ``per_round`` calls,
so slow drifts of the machine (thermal, other processes) hit every system alike.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence


@dataclasses.dataclass
class System:
    """One system on one workload.

    Attributes:
      workload: the workload label, e.g. ``"W1"`` or ``"W3 beam"``.
      name: the system, e.g. ``"s2s_jax"``, ``"torch"``, ``"ct2_float32"``.
      run_once: does one unit of work and returns once its results are computed (device work
        finished, not just dispatched).
      work_per_call: tokens one call processes (target tokens of a training step, or generated
        tokens of a decode: batch x generated length).
      peer: True for the systems s2s_jax is compared with (the "reference" rows of a workload).
      compile_seconds: ahead-of-time compile time (s2s_jax); None for eager systems.
      flops_per_call: model FLOPs of one call (s2s_jax's count, also used for the peers: the
        maths is the same); None where not counted (decoding).
      memory_bytes: what XLA reports one compiled call needs (arguments + outputs + temporaries);
        None for the peers.
      note: a short remark printed with the system's rows.
    """

    workload: str
    name: str
    run_once: Callable[[], None]
    work_per_call: float
    peer: bool = False
    compile_seconds: float | None = None
    flops_per_call: float | None = None
    memory_bytes: int | None = None
    note: str = ""


def alternate(
    systems: Sequence[System], *, rounds: int, per_round: int, warmup: int
) -> dict[str, list[float]]:
    """Times the systems in alternation; returns each system's per-call wall times (seconds).

    Args:
      systems: the systems of one workload (names must be distinct).
      rounds: rounds of timing; in each, every system runs ``per_round`` timed calls in turn.
      per_round: consecutive timed calls of one system per round.
      warmup: untimed calls of every system (in the same alternation) before the first round.

    Returns:
      ``{system name: [rounds * per_round call times]}``.
    """
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise ValueError(
            f"Need rounds >= 1, per_round >= 1 and warmup >= 0; got rounds={rounds}, "
            f"per_round={per_round}, warmup={warmup}."
        )
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"System names within a workload must be distinct, got {names}.")
    for _ in range(warmup):
        for system in systems:
            system.run_once()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for system in systems:
            for _ in range(per_round):
                start = time.perf_counter()
                system.run_once()
                times[system.name].append(time.perf_counter() - start)
    return times


def median(times: Sequence[float]) -> float:
    """The median of a non-empty list of times."""
    if not times:
        raise ValueError("No times to take the median of; run at least one timed call.")
    return statistics.median(times)
