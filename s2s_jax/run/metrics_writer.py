"""Metrics to a JSONL file and TensorBoard event files (process 0 only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np


class MetricWriter:
    """Writes scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/``.

    Each JSONL line is ``{"step": int, "split": str, <name>: float, ...}``. Only process 0 writes,
    so a multi-host run produces one set of files.
    """

    def __init__(self, workdir: str | Path, *, tensorboard: bool = True):
        self._active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self._active:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
        if not self._active:
            return
        values = {k: _to_float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _to_float(value: Any) -> float:
    return float(np.asarray(value))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Reads back a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
