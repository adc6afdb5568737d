"""Ranges of the run config's values, checked once before anything is built or compiled.

``config.py`` knows which keys exist and their types; this module knows which values make
sense. ``check_values`` names the first value out of range, the range, and the fix, so a
``--config.train.log_every=0`` fails at once in one line instead of as a ``ZeroDivisionError``
after the first compile. Model keys are checked by their part configs (``models/*_config.py``)
when the model is built, also before any compile.

JAX-free, like ``config.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Rule = tuple[str, Callable[[Any], bool]]  # (what it must be, the test)


def _int_at_least(low: int) -> Rule:
    return f"an integer >= {low}", lambda v: isinstance(v, int) and v >= low


def _finite_at_least(low: float, strict: bool = False) -> Rule:
    sign = ">" if strict else ">="

    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and math.isfinite(v) and (v > low if strict else v >= low)

    return f"a finite number {sign} {low:g}", ok


POSITIVE_INT, NON_NEGATIVE_INT = _int_at_least(1), _int_at_least(0)
NON_NEGATIVE = _finite_at_least(0.0)
POSITIVE = _finite_at_least(0.0, strict=True)
MESH_AXIS = ("-1 (the remaining devices) or an integer >= 1", lambda v: v == -1 or v >= 1)

# Every number of ``config.base_config`` outside ``model`` (a test keeps this complete).
RULES: dict[str, Rule] = {
    "seed": NON_NEGATIVE_INT,
    "data.min_length": POSITIVE_INT,
    "data.max_length": POSITIVE_INT,
    "data.num_train": POSITIVE_INT,
    "data.num_eval": POSITIVE_INT,
    "data.noise_std": NON_NEGATIVE,
    "data.batch_size": POSITIVE_INT,
    "data.vocab_size": _int_at_least(8),
    "data.max_tokens": _int_at_least(2),
    "data.pack_length": NON_NEGATIVE_INT,
    "train.num_steps": POSITIVE_INT,
    "train.learning_rate": POSITIVE,
    "train.warmup_steps": NON_NEGATIVE_INT,
    "train.weight_decay": NON_NEGATIVE,
    "train.grad_clip_norm": NON_NEGATIVE,
    "train.label_smoothing": ("in [0, 1)", lambda v: math.isfinite(v) and 0 <= v < 1),
    "train.log_every": POSITIVE_INT,
    "eval.every_steps": POSITIVE_INT,
    "eval.batch_size": POSITIVE_INT,
    "eval.max_examples": NON_NEGATIVE_INT,
    "eval.num_show": NON_NEGATIVE_INT,
    "eval.beam_size": POSITIVE_INT,
    "eval.alpha": NON_NEGATIVE,
    "eval.nbest": POSITIVE_INT,
    "eval.max_length_ratio": NON_NEGATIVE,
    "eval.max_length_offset": NON_NEGATIVE_INT,
    "checkpoint.every_steps": POSITIVE_INT,
    "checkpoint.keep": POSITIVE_INT,
    "parallel.data": MESH_AXIS,
    "parallel.fsdp": MESH_AXIS,
    "parallel.tensor": MESH_AXIS,
    "parallel.grad_accum_steps": POSITIVE_INT,
    "parallel.num_processes": NON_NEGATIVE_INT,
    "parallel.process_id": _int_at_least(-1),
    "profile.peak_flops": NON_NEGATIVE,
}
# A run name becomes a folder under runs/: one plain path component.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_values(config: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` (one line: key, value, range, fix) for the first bad value.

    Args:
      config: the run config (a ``ConfigDict`` or its ``to_dict()``).
    """
    for key, (what, ok) in RULES.items():
        section, _, leaf = key.rpartition(".")
        holder = config[section] if section else config
        if leaf not in holder:
            continue
        value = holder[leaf]
        if isinstance(value, bool) or not ok(value):
            raise ValueError(f"--config.{key}={value!r} is out of range: it must be {what}.")
    _check_relations(config)


def _check_relations(config: Mapping[str, Any]) -> None:
    data, ev = config["data"], config["eval"]
    if data["max_length"] < data["min_length"]:
        raise ValueError(
            f"--config.data.max_length={data['max_length']} is below data.min_length="
            f"{data['min_length']}: raise max_length or lower min_length."
        )
    if ev["max_length_ratio"] == 0 and ev["max_length_offset"] == 0:
        raise ValueError(
            "eval.max_length_ratio and eval.max_length_offset are both 0: decoding could not "
            "produce a token. Set either above 0 (defaults: 1.5 and 5)."
        )
    if ev["decode"] == "beam" and ev["nbest"] > ev["beam_size"]:
        raise ValueError(
            f"--config.eval.nbest={ev['nbest']} exceeds eval.beam_size={ev['beam_size']}: beam "
            "search keeps beam_size hypotheses; lower nbest or raise beam_size."
        )
    name = config["name"]
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"--config.name={name!r} is not a plain folder name (it names runs/<name>): use "
            "letters, digits and . _ + -, starting with a letter or digit, without '/'."
        )
