"""Result rows, their ratios to the best peer, the printed table, the targets and the JSON.

Ratio (column "vs best"): how many times better a row is than the best reference row of the
same workload and metric: ``value / best`` for throughput, ``best / value`` for seconds and
bytes (lower is better). The reference rows are the peers (W1-W3) or, in W4, the unrolled
variants that s2s_jax's scans are compared with. So the s2s_jax row's ratio is its speed-up
over the best peer (> 1: s2s_jax is faster), the best peer's own ratio is 1.0 and the other
peers' ratios are below 1. A metric no reference reports (e.g. compile time in W1-W3: eager
PyTorch and CTranslate2 compile nothing) has no ratio.

Ceiling (column "of ceiling"): achieved model FLOP/s over the measured matmul ceiling, for
training rows. Peers are credited with s2s_jax's counted FLOPs per step (the same maths).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import System, median

LOWER_IS_BETTER = frozenset({"compile", "step", "memory", "peak_rss"})
LEGEND = """\
vs best: times better than the best peer of the workload (throughput: value / best; seconds and
  MiB: best / value); the best peer shows 1.00x. W4: the unrolled variants are the references.
of ceiling: model FLOP/s (s2s_jax's counted FLOPs per step, for the peers too) / matmul ceiling.
compile: s2s_jax only, ahead of time; PyTorch, Hugging Face and CTranslate2 run eagerly (none)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One printed figure.

    Attributes:
      workload: e.g. "W1", "W3 beam", "W4 transformer".
      system: e.g. "s2s_jax", "torch", "ct2_int8", "s2s_jax unrolled".
      metric: "throughput" | "compile" | "step" | "memory" (XLA's figure for one call) |
        "peak_rss" (the system's own process, ``benchmarks/peak_rss.py``).
      value: the figure, in ``unit``.
      unit: "tokens/s", "s", "MiB".
      reference: a peer (or W4 unrolled variant) that ratios are taken against.
      ratio: see the module docstring; None where no reference reports the metric.
      ceiling: fraction of the matmul ceiling (training throughput rows), else None.
      note: a short remark.
    """

    workload: str
    system: str
    metric: str
    value: float
    unit: str
    reference: bool = False
    ratio: float | None = None
    ceiling: float | None = None
    note: str = ""


def system_rows(
    system: System,
    times: Sequence[float],
    ceiling: float | None,
    extra: Collection[str] = (),
) -> list[Row]:
    """Throughput (median over ``times``) and compile time rows of one system, and extras.

    Args:
      system: the measured system.
      times: its per-call wall times in seconds.
      ceiling: machine ceiling in FLOP/s; with ``system.flops_per_call`` gives "of ceiling".
      extra: also "step" (the median call time in seconds) and/or "memory" (XLA's figure, for
        the systems that have one).
    """
    seconds = median(times)
    fraction = None
    if ceiling and system.flops_per_call:
        fraction = system.flops_per_call / seconds / ceiling
    common = dict(workload=system.workload, system=system.name, reference=system.peer)
    rows = [
        Row(metric="throughput", value=system.work_per_call / seconds, unit="tokens/s",
            ceiling=fraction, note=f"median of {len(times)}; {system.note}".rstrip("; "),
            **common),
    ]  # fmt: skip
    if "step" in extra:
        rows.append(Row(metric="step", value=seconds, unit="s", ceiling=fraction, **common))
    if system.compile_seconds is not None:
        note = "trace + lower + XLA compile, not in the throughput"
        rows.append(
            Row(metric="compile", value=system.compile_seconds, unit="s", note=note, **common)
        )
    if "memory" in extra and system.memory_bytes is not None:
        note = "XLA: arguments + outputs + temporaries of one call"
        rows.append(
            Row(metric="memory", value=system.memory_bytes / 2**20, unit="MiB", note=note, **common)
        )
    return rows


def add_ratios(rows: Sequence[Row]) -> list[Row]:
    """The rows with ``ratio`` filled in against the best reference row (module docstring)."""
    best: dict[tuple[str, str], float] = {}
    for row in rows:
        if row.reference and row.value > 0:
            key = (row.workload, row.metric)
            pick = min if row.metric in LOWER_IS_BETTER else max
            best[key] = pick(best.get(key, row.value), row.value)
    out = []
    for row in rows:
        ref = best.get((row.workload, row.metric))
        ratio = None
        if ref is not None and row.value > 0:
            ratio = ref / row.value if row.metric in LOWER_IS_BETTER else row.value / ref
        out.append(dataclasses.replace(row, ratio=ratio))
    return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as one aligned text table."""
    header = (
        f"{'workload':<15} {'system':<22} {'metric':<10} {'value':>12} {'unit':<9} "
        f"{'vs best':>8} {'of ceiling':>10}  note"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.workload:<15} {r.system:<22} {r.metric:<10} {r.value:>12,.4g} {r.unit:<9} "
            f"{_fmt(r.ratio, '.2f', 'x'):>8} {_fmt(r.ceiling, '.1%'):>10}  {r.note}"
        )
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Target:
    """``subject`` must beat ``against`` on ``metric`` by at least ``factor`` (issue #6)."""

    workload: str
    subject: str
    against: str
    metric: str
    factor: float

    def describe(self) -> str:
        what = "compiles" if self.metric == "compile" else "runs"
        return (
            f"{self.workload}: {self.subject} {what} >= {self.factor:g}x faster than "
            f"{self.against} ({self.metric})"
        )


TARGETS = (
    Target("W1", "s2s_jax", "torch", "throughput", 1.15),
    Target("W2", "s2s_jax", "hf_marian", "throughput", 1.5),
    Target("W3 beam", "s2s_jax", "ct2_float32", "throughput", 1.2),
    Target("W3 beam", "s2s_jax", "hf_generate", "throughput", 2.5),
    Target("W4 transformer", "s2s_jax scanned", "s2s_jax unrolled", "compile", 3.0),
)


def check_targets(rows: Sequence[Row], targets: Sequence[Target] = TARGETS) -> list[dict]:
    """Each target's status: PASS, MISS, or SKIP when either row was not measured.

    Returns:
      One dict per target: target (its description), status, speedup (None on SKIP).
    """
    index = {(r.workload, r.system, r.metric): r.value for r in rows}
    results = []
    for t in targets:
        subject = index.get((t.workload, t.subject, t.metric))
        against = index.get((t.workload, t.against, t.metric))
        if subject is None or against is None or subject <= 0 or against <= 0:
            results.append({"target": t.describe(), "status": "SKIP", "speedup": None})
            continue
        speedup = against / subject if t.metric in LOWER_IS_BETTER else subject / against
        status = "PASS" if speedup >= t.factor else "MISS"
        results.append({"target": t.describe(), "status": status, "speedup": speedup})
    return results


def format_targets(results: Sequence[dict]) -> str:
    """One line per target: ``PASS 1.32x  W1: s2s_jax runs >= 1.15x faster than torch ...``."""
    lines = []
    for r in results:
        speedup = "not measured" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"{r['status']:<4} {speedup:>12}  {r['target']}")
    return "\n".join(lines)


def write_json(path: str | Path, rows: Sequence[Row], targets: Sequence[dict], **info: Any):
    """Writes ``{**info, "rows": [...], "targets": [...]}`` to ``path``."""
    payload = {**info, "rows": [dataclasses.asdict(r) for r in rows], "targets": list(targets)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
