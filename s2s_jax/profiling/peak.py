"""Peak FLOP/s per device (a known table or a measured matmul ceiling) and MFU.

Accelerators use their datasheet dense peaks. A CPU, or an accelerator the table does not know,
gets a measured ceiling instead: a square matmul through ``jnp.dot`` under jit, the median of
several timed runs after a warm-up (the "machine ceiling" of the benchmark workloads).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp

# (lower-case substring of device.device_kind, {dtype: dense peak FLOP/s}), first match wins,
# so more specific kinds come first. float32 figures are what XLA's default matmul precision
# runs: TF32 tensor cores on NVIDIA Ampere and later, single bf16 passes on TPUs.
PEAK_TABLE: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bfloat16": 756e12, "float16": 756e12, "float32": 378e12}),
    ("h100", {"bfloat16": 989e12, "float16": 989e12, "float32": 494.7e12}),
    ("h200", {"bfloat16": 989e12, "float16": 989e12, "float32": 494.7e12}),
    ("a100", {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12}),
    ("tpu v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5", {"bfloat16": 459e12, "float32": 459e12}),  # v5p reports "TPU v5"
    ("tpu v6 lite", {"bfloat16": 918e12, "float32": 918e12}),
    ("tpu v6e", {"bfloat16": 918e12, "float32": 918e12}),
)
CEILING_SIZE = 2048  # matmul side of the measured ceiling (WORKLOADS.md "Machine ceiling")
CEILING_REPEATS = 20


@dataclasses.dataclass(frozen=True)
class Peak:
    """A per-device peak FLOP/s and where it came from.

    Attributes:
      flops_per_sec: peak FLOP/s of one device.
      source: how it was obtained, e.g. ``"table: NVIDIA H100 80GB HBM3, bfloat16"``.
    """

    flops_per_sec: float
    source: str


def table_peak(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """The datasheet peak for a ``device.device_kind`` and compute dtype, or None if unknown."""
    kind = device_kind.lower()
    for pattern, peaks in PEAK_TABLE:
        if pattern in kind:
            return peaks.get(dtype)
    return None


def peak_flops(
    device: jax.Device | None = None,
    *,
    dtype: str = "float32",
    override: float = 0.0,
    size: int = CEILING_SIZE,
    repeats: int = CEILING_REPEATS,
) -> Peak:
    """The peak FLOP/s that MFU divides by, for one device.

    Args:
      device: the device (default: the first one).
      dtype: the model's compute dtype ("float32", "bfloat16", "float16").
      override: a positive value (config ``profile.peak_flops``) is used as is.
      size: matmul side when the ceiling is measured.
      repeats: timed runs when the ceiling is measured (the median is used).

    Returns:
      The override, else the table figure for the device kind, else a measured matmul ceiling
      (cached per process).
    """
    if override < 0:
        raise ValueError(f"profile.peak_flops must be >= 0 (0 = automatic), got {override}.")
    if override > 0:
        return Peak(float(override), "config profile.peak_flops")
    device = device or jax.devices()[0]
    known = table_peak(device.device_kind, dtype)
    if known is not None:
        return Peak(known, f"table: {device.device_kind}, {dtype}")
    measured = measure_matmul_flops(size, repeats, dtype=dtype, device=device)
    return Peak(
        measured,
        f"measured: {dtype} {size}x{size}x{size} jnp.dot under jit, median of {repeats} "
        f"on {device.device_kind}",
    )


@functools.cache
def measure_matmul_flops(
    size: int = CEILING_SIZE,
    repeats: int = CEILING_REPEATS,
    *,
    dtype: str = "float32",
    device: jax.Device | None = None,
) -> float:
    """Achieved FLOP/s of a ``[size, size] @ [size, size]`` matmul (median of ``repeats``).

    Cached per process and arguments: the measurement takes seconds on a CPU.
    """
    if size < 1 or repeats < 1:
        raise ValueError(f"Matmul ceiling needs size >= 1 and repeats >= 1, got {size}, {repeats}.")
    device = device or jax.devices()[0]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(ka, (size, size), dtype), device)
    b = jax.device_put(jax.random.normal(kb, (size, size), dtype), device)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()  # compile and warm caches outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


def mfu(flops_per_step: float, step_seconds: float, peak: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices.

    Args:
      flops_per_step: FLOPs of one step over all devices (global, not per device).
      step_seconds: wall time of one step.
      peak: peak FLOP/s of one device.
      num_devices: devices the step runs on.

    Returns:
      ``flops_per_step / step_seconds / (peak * num_devices)``, in [0, 1] for sane inputs.
    """
    if step_seconds <= 0 or peak <= 0 or num_devices < 1 or flops_per_step < 0:
        raise ValueError(
            "mfu needs flops_per_step >= 0, step_seconds > 0, peak > 0 and num_devices >= 1; "
            f"got {flops_per_step}, {step_seconds}, {peak}, {num_devices}."
        )
    return flops_per_step / step_seconds / (peak * num_devices)
