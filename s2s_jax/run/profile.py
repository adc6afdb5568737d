"""`s2s profile`: compile time, step time, throughput, FLOPs, MFU and memory of a train step.

    s2s profile --config experiments/reverse_attention.py --workdir /tmp/prof
    s2s profile --config experiments/bench_w1_lstm.py --workdir /tmp/w1 --vocab-size 8000

The step is compiled ahead of time (compile time reported on its own), then run ``warmup``
untimed and ``steps`` timed steps on batches already on the device; every step waits for its
result, so a step time is one full forward + backward + update. ``--vocab-size``/``--length``
replace the task data by random token ids of one fixed shape (the benchmark workloads' synthetic
data; the length defaults to the experiment's largest bucket) and size the model's vocabularies
to match. Results go to ``<workdir>/profile.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from s2s_jax.config import load_train_config, to_dict
from s2s_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID
from s2s_jax.models.registry import build_model
from s2s_jax.profiling import (
    Tracer,
    compile_step,
    count_flops,
    device_peak_memory,
    dump_hlo,
    memory_stats,
    mfu,
    peak_flops,
    step_flops,
)
from s2s_jax.run.components import Components, build
from s2s_jax.run.run_info import git_revision, package_versions
from s2s_jax.training.state import param_count
from s2s_jax.training.step import jit_train_step

Batch = dict[str, np.ndarray]

RESULT_FILE = "profile.json"
HLO_FILE = "train_step.hlo.txt"
_FIRST_TOKEN = UNK_ID + 1  # synthetic ids avoid PAD, BOS, EOS and UNK
_MAX_SKIPPED = 10_000  # batches of other shapes skipped before giving up on the task data


def benchmark_batches(
    config: ml_collections.ConfigDict, vocab_size: int, length: int
) -> Iterator[Batch]:
    """Endless random-token batches of one fixed shape (seeded by ``config.seed``).

    Args:
      config: the run config (``data.batch_size`` and ``seed`` are used).
      vocab_size: ids are drawn uniformly from ``[UNK_ID + 1, vocab_size)``.
      length: sequence length of inputs and targets; the last position is EOS, none is PAD.

    Yields:
      ``{"inputs", "targets": [batch, length] int32, "inputs_mask": [batch, length] bool}``.
    """
    if vocab_size <= _FIRST_TOKEN or length < 1:
        raise ValueError(
            f"Synthetic batches need vocab_size > {_FIRST_TOKEN} (the special ids come first) "
            f"and length >= 1; got vocab_size={vocab_size}, length={length}."
        )
    rng = np.random.default_rng([config.seed, 0xBE4C])
    shape = (config.data.batch_size, length)
    while True:
        batch = {}
        for key in ("inputs", "targets"):
            ids = rng.integers(_FIRST_TOKEN, vocab_size, size=shape, dtype=np.int32)
            ids[:, -1] = EOS_ID
            batch[key] = ids
        batch["inputs_mask"] = np.ones(shape, bool)
        yield batch


def _same_shape_batches(source: Iterator[Batch], count: int) -> list[Batch]:
    """``count`` batches shaped like the first one (bucketed task data varies in shape)."""
    first = next(source)
    shapes = {k: v.shape for k, v in first.items()}
    batches, skipped = [first], 0
    while len(batches) < count:
        batch = next(source)
        if {k: v.shape for k, v in batch.items()} == shapes:
            batches.append(batch)
        elif (skipped := skipped + 1) > _MAX_SKIPPED:
            raise ValueError(
                f"Found only {len(batches)} of {count} batches shaped {shapes} in the task data; "
                "profile with fixed shapes instead (--vocab-size/--length)."
            )
    return batches


def build_for_profile(
    config: ml_collections.ConfigDict,
    num_batches: int,
    *,
    vocab_size: int | None = None,
    length: int | None = None,
) -> tuple[Components, list[Batch], str]:
    """The run's components and ``num_batches`` host batches of one shape to profile on.

    Args:
      config: the resolved run config.
      num_batches: how many batches to return.
      vocab_size: if this or ``length`` is set, synthetic ``benchmark_batches`` replace the
        task data and both model vocabularies get this size (None: the task's vocabulary).
      length: synthetic sequence length (None: the largest bucket).

    Returns:
      ``(components, batches, description of the data)``. Task batches all have the shape of
      the first one drawn (bucketed data varies; the compiled step takes one shape).
    """
    c = build(config)
    if vocab_size is None and length is None:
        return c, _same_shape_batches(c.data.train, num_batches), f"task {config.data.task!r}"
    vocab_size = vocab_size or c.data.tgt_vocab.size
    length = length or max(c.data.buckets)
    model, model_config = build_model(config.model, vocab_size, vocab_size)
    c = dataclasses.replace(c, model=model, model_config=model_config)
    source = benchmark_batches(config, vocab_size, length)
    batches = [next(source) for _ in range(num_batches)]
    return c, batches, f"synthetic: vocab {vocab_size}, length {length}"


def _timed_steps(compiled, state, batches, rng, tracer: Tracer) -> tuple[list[float], Any]:
    """Runs the compiled step over ``batches`` (numbered from 1); returns step times, state."""
    times = []
    for step, batch in enumerate(batches, start=1):
        tracer.step(step, wait_for=state)
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            start = time.perf_counter()
            state, metrics = compiled(state, batch, rng)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - start)
    tracer.close(wait_for=state)
    return times, state


def _num_devices(compiled: jax.stages.Compiled) -> int:
    shardings = jax.tree.leaves(compiled.input_shardings)
    return len(set().union(*(s.device_set for s in shardings)))


def profile_experiment(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    steps: int = 20,
    warmup: int = 3,
    vocab_size: int | None = None,
    length: int | None = None,
) -> dict[str, Any]:
    """Compiles and times the experiment's train step; writes ``<workdir>/profile.json``.

    Args:
      config: the resolved run config; ``profile.trace_steps`` (numbered 1..warmup+steps here),
        ``profile.dump_hlo`` and ``profile.peak_flops`` are honoured.
      workdir: where the JSON, the trace (``profile/``) and the HLO dump go.
      steps: timed steps (the median is reported).
      warmup: untimed steps run first.
      vocab_size, length: if either is set, profile on synthetic random-token batches; see
        ``build_for_profile``.

    Returns:
      The JSON-safe result (seconds, FLOPs of one step over all devices, FLOP/s, bytes):
      compile_seconds, step_seconds (median; also _min, _max), tokens_per_step and
      tokens_per_sec (non-PAD targets), flops_per_step (``count_flops``: scans counted in full),
      xla_flops_per_step (XLA's cost analysis: scan bodies once), achieved_flops_per_sec,
      peak_flops_per_sec and peak_source, mfu, memory (``memory_stats`` plus
      device_peak_bytes, None where not reported), trace_files, hlo_file (if dumped), the
      batch shape, device, data and run record (config, git revision, package versions).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"Need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}.")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    c, batches, data = build_for_profile(
        config, warmup + steps, vocab_size=vocab_size, length=length
    )
    init_rng, dropout_rng = c.rngs()
    state = jax.jit(c.init_fn)(init_rng)
    train_step = jit_train_step(c.model, c.tx, c.schedule, config.train.label_smoothing)
    compiled, compile_seconds = compile_step(train_step, state, batches[0], dropout_rng)
    flops = count_flops(train_step, state, batches[0], dropout_rng)
    result = {
        "experiment": config.name,
        "data": data,
        "batch_shape": {k: list(v.shape) for k, v in batches[0].items()},
        "param_count": param_count(state.params),
        "compile_seconds": compile_seconds,
        "flops_per_step": flops,
        **_xla_figures(compiled),
    }
    if config.profile.dump_hlo:
        result["hlo_file"] = str(dump_hlo(compiled, workdir / HLO_FILE))
    tokens = [int(np.count_nonzero(b["targets"] != PAD_ID)) for b in batches[warmup:]]
    on_device = [jax.device_put(b) for b in batches]
    with Tracer(workdir, config.profile.trace_steps) as tracer:
        times, state = _timed_steps(compiled, state, on_device, dropout_rng, tracer)
        result["trace_files"] = [str(p) for p in tracer.trace_files()]
    result.update(_throughput(config, times[warmup:], tokens, flops, result["num_devices"]))
    result["memory"]["device_peak_bytes"] = device_peak_memory()
    result.update(steps=steps, warmup=warmup, run=_run_record(config))
    (workdir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _xla_figures(compiled: jax.stages.Compiled) -> dict[str, Any]:
    """What XLA says about the compiled step: devices, cost-analysis FLOPs, buffer sizes."""
    devices = _num_devices(compiled)
    try:
        xla_flops = step_flops(compiled) * devices  # per device -> global
    except ValueError:
        xla_flops = None
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": devices,
        "xla_flops_per_step": xla_flops,
        "memory": memory_stats(compiled),
    }


def _throughput(
    config: ml_collections.ConfigDict,
    times: list[float],
    tokens: list[int],
    flops: float,
    num_devices: int,
) -> dict[str, Any]:
    step_seconds = statistics.median(times)
    peak = peak_flops(dtype=config.model.dtype, override=config.profile.peak_flops)
    return {
        "step_seconds": step_seconds,
        "step_seconds_min": min(times),
        "step_seconds_max": max(times),
        "tokens_per_step": statistics.mean(tokens),
        "tokens_per_sec": statistics.mean(tokens) / step_seconds,
        "achieved_flops_per_sec": flops / step_seconds,
        "peak_flops_per_sec": peak.flops_per_sec,
        "peak_source": peak.source,
        "mfu": mfu(flops, step_seconds, peak.flops_per_sec, num_devices),
    }


def _run_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return {
        "config": to_dict(config),
        "git_revision": git_revision(),
        "packages": package_versions(),
    }


def _mib(num_bytes: int | None) -> str:
    return "not reported" if num_bytes is None else f"{num_bytes / 2**20:.1f} MiB"


def format_report(result: dict[str, Any]) -> str:
    """A few human-readable lines summarising ``profile_experiment``'s result."""
    memory = result["memory"]
    xla = result["xla_flops_per_step"]
    lines = [
        f"{result['experiment']} on {result['num_devices']} x {result['device_kind']} "
        f"({result['data']}, batch {result['batch_shape']['targets']}, "
        f"{result['param_count']:,} params)",
        f"compile     {result['compile_seconds']:.2f} s",
        f"step        {result['step_seconds'] * 1e3:.1f} ms median of {result['steps']} "
        f"(min {result['step_seconds_min'] * 1e3:.1f}, max {result['step_seconds_max'] * 1e3:.1f})",
        f"throughput  {result['tokens_per_sec']:,.0f} target tokens/s",
        f"FLOPs/step  {result['flops_per_step']:.4g} (XLA cost analysis: "
        f"{'n/a' if xla is None else f'{xla:.4g}'}, scan bodies counted once)",
        f"achieved    {result['achieved_flops_per_sec'] / 1e9:.2f} GFLOP/s of peak "
        f"{result['peak_flops_per_sec'] / 1e9:.2f} GFLOP/s ({result['peak_source']})",
        f"MFU         {result['mfu']:.2%}",
        f"memory      {_mib(memory.get('total_bytes'))} per step (temp "
        f"{_mib(memory.get('temp_bytes'))}, arguments {_mib(memory.get('argument_bytes'))}), "
        f"device peak {_mib(memory['device_peak_bytes'])}",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``s2s profile`` (``--config.a.b=v`` overrides are taken as extras)."""
    parser = argparse.ArgumentParser(
        prog="s2s profile", description="Compile, time and measure an experiment's train step."
    )
    parser.add_argument("--config", required=True, help="experiment file, optionally ':variant'")
    parser.add_argument("--workdir", required=True, help="where profile.json and traces go")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--vocab-size", type=int, help="synthetic random-token data, this vocab")
    parser.add_argument("--length", type=int, help="synthetic data of this source/target length")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``s2s profile --config X[:variant] --workdir DIR [--steps N] [--config.a.b=v ...]``."""
    args, extra = build_parser().parse_known_args(argv)
    config = load_train_config(args.config, extra)
    result = profile_experiment(
        config,
        args.workdir,
        steps=args.steps,
        warmup=args.warmup,
        vocab_size=args.vocab_size,
        length=args.length,
    )
    print(format_report(result))
    print(f"Wrote {Path(args.workdir) / RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
