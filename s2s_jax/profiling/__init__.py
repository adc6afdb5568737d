"""Profiling XLA: compile time, FLOPs per step, peak FLOP/s and MFU, memory, traces, HLO dumps.

    compiled, compile_seconds = compile_step(train_step, state, batch, rng)
    flops = count_flops(train_step, state, batch, rng)        # global, scans counted in full
    peak = peak_flops(dtype="float32", override=config.profile.peak_flops)
    utilisation = mfu(flops, step_seconds, peak.flops_per_sec, num_devices)
    memory_stats(compiled); device_peak_memory(); dump_hlo(compiled, path)
    Tracer(workdir, config.profile.trace_steps).step(step, wait_for=state)

``s2s_jax.run.profile`` puts these together for ``s2s profile``.
"""

from s2s_jax.profiling.compiled import (
    compile_step,
    device_peak_memory,
    dump_hlo,
    memory_stats,
    step_flops,
)
from s2s_jax.profiling.flops import count_flops, jaxpr_flops
from s2s_jax.profiling.peak import Peak, measure_matmul_flops, mfu, peak_flops, table_peak
from s2s_jax.profiling.trace import Tracer

__all__ = [
    "Peak",
    "Tracer",
    "compile_step",
    "count_flops",
    "device_peak_memory",
    "dump_hlo",
    "jaxpr_flops",
    "measure_matmul_flops",
    "memory_stats",
    "mfu",
    "peak_flops",
    "step_flops",
    "table_peak",
]
