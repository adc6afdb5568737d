"""Ahead-of-time compilation of a step, and what XLA reports about the compiled program."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax

# CompiledMemoryStats field -> the key memory_stats() reports it under.
_MEMORY_FIELDS = {
    "argument_size_in_bytes": "argument_bytes",
    "output_size_in_bytes": "output_bytes",
    "alias_size_in_bytes": "alias_bytes",
    "temp_size_in_bytes": "temp_bytes",
    "generated_code_size_in_bytes": "generated_code_bytes",
}


def compile_step(jitted_fn: Any, *args: Any, **kwargs: Any) -> tuple[jax.stages.Compiled, float]:
    """Traces, lowers and compiles ``jitted_fn`` for these arguments (jax's AOT API).

    Args:
      jitted_fn: a ``jax.jit``-wrapped function, e.g. ``jit_train_step(...)``.
      *args: example arguments (arrays or ``jax.ShapeDtypeStruct``); only shapes, dtypes and
        shardings matter.
      **kwargs: example keyword arguments.

    Returns:
      ``(compiled, seconds)``: the executable (call it like the function; it accepts only these
      shapes) and the wall time of tracing + lowering + XLA compilation.
    """
    start = time.perf_counter()
    compiled = jitted_fn.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start


def step_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one call according to XLA's cost analysis of the compiled program.

    Two caveats: for a sharded program the figure is per device (multiply by the device
    count for the global figure), and a ``while`` loop body (every ``lax.scan``) is counted once
    whatever its trip count; ``count_flops`` counts scans ``length`` times.

    Raises:
      ValueError: if the backend reports no cost analysis.
    """
    analysis = compiled.cost_analysis()
    # Older jax versions return one dict per HLO module, jax >= 0.4.3x a single dict.
    entries = analysis if isinstance(analysis, list | tuple) else [analysis]
    flops = [entry["flops"] for entry in entries if entry and "flops" in entry]
    if not flops:
        raise ValueError(
            f"The {jax.default_backend()} backend reported no FLOPs in cost_analysis(); "
            "use s2s_jax.profiling.count_flops on the step function instead."
        )
    return float(sum(flops))


def memory_stats(compiled: jax.stages.Compiled) -> dict[str, int]:
    """Buffer sizes XLA assigned to the compiled program, per device, in bytes.

    Returns:
      ``argument_bytes``, ``output_bytes``, ``alias_bytes`` (outputs reusing donated inputs),
      ``temp_bytes`` (scratch, e.g. activations kept for the backward pass),
      ``generated_code_bytes``, and ``total_bytes`` = arguments + outputs - aliased + temp, what
      one call needs at most. Empty if the backend reports nothing.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    stats = {key: int(getattr(analysis, field)) for field, key in _MEMORY_FIELDS.items()}
    # jax also has peak_memory_in_bytes, but on CPU it leaves out temp buffers: not used.
    stats["total_bytes"] = (
        stats["argument_bytes"] + stats["output_bytes"] - stats["alias_bytes"] + stats["temp_bytes"]
    )
    return stats


def device_peak_memory(device: jax.Device | None = None) -> int | None:
    """Peak bytes in use on ``device`` since the process started, or None where not reported.

    GPUs and TPUs report it; the CPU backend does not.
    """
    stats = (device or jax.devices()[0]).memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def dump_hlo(
    compiled_or_lowered: jax.stages.Compiled | jax.stages.Lowered, path: str | Path
) -> Path:
    """Writes the optimized HLO text of a compiled (or lowered, then compiled) program.

    Args:
      compiled_or_lowered: ``jitted.lower(...)`` or ``jitted.lower(...).compile()``.
      path: the text file to write; parent directories are created.

    Returns:
      The path written.
    """
    compiled = compiled_or_lowered
    if isinstance(compiled, jax.stages.Lowered):
        compiled = compiled.compile()
    if not isinstance(compiled, jax.stages.Compiled):
        raise ValueError(
            f"dump_hlo needs a jax.stages.Compiled or Lowered, got {type(compiled).__name__}; "
            "pass jitted_fn.lower(*args) or its .compile()."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(compiled.as_text())
    return path
