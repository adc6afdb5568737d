"""Reporting an evaluation: the results and hypotheses files, and the lines shown in logs.

Training writes ``eval_results.json`` / ``hypotheses.txt`` into its workdir, ``s2s evaluate``
writes ``evaluate_<tag>.json`` / ``.txt``; both through `write_results` and `write_hypotheses`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from s2s_jax.evaluation.evaluate import EvalResult, sources_and_references


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    # Write-then-rename: a reader (or a preempted run) never sees a half-written file.
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_results(path: str | os.PathLike, result: EvalResult) -> None:
    """Writes ``result``'s metrics and then their signatures as one JSON object, atomically."""
    report = {**result.metrics, **result.signatures}
    _write_atomic(path, json.dumps(report, indent=2) + "\n")


def write_hypotheses(path: str | os.PathLike, hypotheses: Sequence[str]) -> None:
    """Writes one hypothesis per line, atomically (newlines inside one become spaces)."""
    lines = [h.replace("\r", " ").replace("\n", " ") for h in hypotheses]
    _write_atomic(path, "".join(f"{line}\n" for line in lines))


def format_metrics(result: EvalResult) -> str:
    """One log line: every metric (per-length ones in a table after "|", when asked for)."""
    parts = [f"{k} {v:.4f}" for k, v in result.metrics.items() if "/len_" not in k]
    line = " ".join(parts)
    return f"{line} | {format_by_length(result.by_length)}" if result.by_length else line


def format_by_length(by_length: dict[str, tuple[float, int]]) -> str:
    return "  ".join(f"len {k}: {v:.1%} (n={n})" for k, (v, n) in by_length.items())


def format_examples(examples: Sequence, hypotheses: Sequence[str], n: int) -> str:
    """A small table of source / reference / hypothesis for the first ``n`` examples."""
    lines = []
    sources, references = sources_and_references(examples)
    for src, ref, hyp in list(zip(sources, references, hypotheses, strict=True))[:n]:
        if not isinstance(src, str):
            src = f"<{len(src)} frames>"
        mark = "ok " if hyp == ref else "ERR"
        lines.append(f"  [{mark}] src: {src}\n        ref: {ref}\n        hyp: {hyp}")
    return "\n".join(lines)
