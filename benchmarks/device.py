"""The accelerator benchmark: one command, a few minutes on one GPU, one table.

    python benchmarks/device.py                       # on the GPU: GPU-sized shapes
    python benchmarks/device.py --tiny --strict       # smoke run anywhere (the test suite's)
    python benchmarks/device.py --sections W2,W1 --json out.json

Sections (each prints its rows as soon as it has them; a failing section prints one error
line and the run goes on, unless ``--strict``):
  ceiling  the bfloat16 and float32 matmul FLOP/s this device reaches (8192^2 matmuls).
  W2       Transformer-base training (d_model 512, 8 heads, FFN 2048, 6+6 layers, one shared
           32k vocabulary, batch 128 x 64 tokens, bfloat16 compute, float32 params): s2s_jax
           with the einsum attention, with cuDNN's flash attention (``attention_kernel=cudnn``;
           "xla" off a GPU), and the latter with "rbg" dropout keys; HF Marian (eager, bf16
           autocast).
  W1       the W1 LSTM (2+2 layers of 512, Luong attention) at batch 256, float32: the scanned
           recurrence against ``lstm_kernel=auto`` (cuDNN on a GPU) and PyTorch's cuDNN LSTM.
  W3       beam-4 and greedy decoding of 64 tokens for 64 sources of 64 tokens with a random
           Transformer-base (bfloat16) against HF ``generate`` (bfloat16).
  parity   bfloat16 against float32 training loss over a short run on a copy task (same init
           and batches): the largest relative loss gap.

MFU is counted FLOPs per step over the device's table peak (``profiling.peak``) for the dtype
of the compute; "of ceiling" is over the bfloat16 matmul ceiling measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np

from benchmarks import peers, report, s2s_side, workloads
from benchmarks.harness import System, alternate
from s2s_jax.config import fixed_length_data
from s2s_jax.profiling import measure_matmul_flops
from s2s_jax.profiling.peak import table_peak

SECTIONS = ("ceiling", "W2", "W1", "W3", "parity")


@dataclasses.dataclass(frozen=True)
class Shapes:
    """GPU-sized or tiny shapes of every section."""

    vocab: int
    w2_model: dict
    w2_batch: int
    w2_length: int
    w1_batch: int
    w1_model: dict
    decode_batch: int
    decode_length: int
    ceiling_size: int
    parity_steps: int


FULL = Shapes(
    vocab=32000,
    w2_model=dict(d_model=512, num_heads=8, mlp_dim=2048, num_layers=6),
    w2_batch=128,
    w2_length=64,
    w1_batch=256,
    w1_model={},
    decode_batch=64,
    decode_length=64,
    ceiling_size=8192,
    parity_steps=60,
)
TINY = Shapes(
    vocab=64,
    w2_model=dict(d_model=16, num_heads=2, mlp_dim=32, num_layers=1),
    w2_batch=4,
    w2_length=8,
    w1_batch=4,
    w1_model=dict(embed_dim=16, hidden_size=16, num_layers=1),
    decode_batch=2,
    decode_length=4,
    ceiling_size=128,
    parity_steps=3,
)


@dataclasses.dataclass
class Run:
    """Settings and results of one run."""

    shapes: Shapes
    rounds: int
    steps: int
    strict: bool
    rows: list = dataclasses.field(default_factory=list)
    facts: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)

    def measure(self, systems: list[System], ceiling: float | None = None) -> None:
        times = alternate(systems, rounds=self.rounds, per_round=self.steps, warmup=2)
        rows = []
        for system in systems:
            rows += report.system_rows(system, times[system.name], ceiling)
        rows = report.add_ratios(rows)
        self.rows += rows
        print(report.format_table(rows), flush=True)


def _w2_config(shapes: Shapes, *, dtype: str, kernel: str):
    config = s2s_side.with_model(
        workloads.w2_config(tiny=False),
        **shapes.w2_model,
        attention_kernel=kernel,
        max_position=max(128, shapes.w2_length),
    )
    config.model.dtype = dtype
    fixed_length_data(config, length=shapes.w2_length, batch_size=shapes.w2_batch)
    return config


def _w2_batches(shapes: Shapes, config, *, copy: bool = False):
    batches = workloads.training_batches(config, shapes.vocab)
    if copy:  # a learnable task: the target is the source
        batches = [{**b, "targets": b["inputs"].copy()} for b in batches]
    return batches


def _peak(dtype: str) -> float | None:
    return table_peak(jax.devices()[0].device_kind, dtype)


def _mfu_rows(run: Run, systems: list[System], dtype: str) -> None:
    peak = _peak(dtype)
    for system in systems:
        step = [r for r in run.rows if r.system == system.name and r.metric == "throughput"][-1]
        if peak and system.flops_per_call:
            seconds = system.work_per_call / step.value
            run.facts[f"{system.workload} {system.name} MFU"] = (
                system.flops_per_call / seconds / peak
            )
    for key, value in run.facts.items():
        if key.endswith("MFU"):
            print(f"{key}: {100 * value:.1f}% of the {dtype} table peak", flush=True)


def section_ceiling(run: Run) -> None:
    size = run.shapes.ceiling_size
    for dtype in ("bfloat16", "float32"):
        flops = measure_matmul_flops(size, 10, dtype=dtype)
        run.facts[f"ceiling {dtype}"] = flops
        table = _peak(dtype)
        of_table = (
            f" ({100 * flops / table:.0f}% of the table's {table / 1e12:.0f} T)" if table else ""
        )
        print(f"ceiling {dtype}: {flops / 1e9:,.0f} GFLOP/s{of_table}", flush=True)


def section_w2(run: Run) -> None:
    shapes = run.shapes
    fused = "cudnn" if jax.default_backend() == "gpu" else "xla"  # "cudnn" raises elsewhere
    variants = [
        ("s2s_jax einsum", "einsum", None),
        (f"s2s_jax {fused}", fused, None),
        (f"s2s_jax {fused} rbg", fused, "rbg"),
    ]
    if shapes is TINY:  # the smoke run: one compile per code path (kernels, rbg keys)
        variants = variants[::2]
    systems = []
    for name, kernel, rng_impl in variants:
        config = _w2_config(shapes, dtype="bfloat16", kernel=kernel)
        batches = _w2_batches(shapes, config)
        print(f"compiling W2 {name}", flush=True)
        note = f"attention_kernel={kernel}" + (f", {rng_impl} keys" if rng_impl else "")
        build = functools.partial(
            s2s_side.train_system, "W2 base bf16", name, config, shapes.vocab, batches,
            rng_impl=rng_impl, note=note,
        )  # fmt: skip
        _try(run, f"W2 {name}", lambda build=build: systems.append(build()))
    if systems and not peers.missing("hf_marian"):
        systems.append(_hf_marian_bf16(shapes, config, batches, systems[0].flops_per_call))
    run.measure(systems, run.facts.get("ceiling bfloat16"))
    _mfu_rows(run, systems, "bfloat16")


def _try(run: Run, what: str, fn: Callable[[], None]) -> None:
    """Runs ``fn``; a failure is one error line (the section goes on) unless ``run.strict``."""
    try:
        fn()
    except Exception as error:
        if run.strict:
            raise
        run.errors.append(f"{what}: {type(error).__name__}: {error}")
        print(f"{what} FAILED: {type(error).__name__}: {str(error)[:2000]}", flush=True)


def _hf_marian_bf16(shapes: Shapes, config, batches, flops: float | None) -> System:
    """HF Marian's eager step under bf16 autocast, credited with s2s_jax's FLOP count."""
    import torch

    from benchmarks.peers import hf_marian

    system = hf_marian.train_system("W2 base bf16", config, shapes.vocab, batches)
    inner = system.run_once

    def run_once() -> None:
        with torch.autocast(peers.torch_device(), dtype=torch.bfloat16):
            inner()

    return dataclasses.replace(
        system, run_once=run_once, flops_per_call=flops, note=system.note + ", bf16 autocast"
    )


def section_w1(run: Run) -> None:
    shapes = run.shapes
    systems = []
    for name, kernel in (("s2s_jax scan", "scan"), ("s2s_jax auto", "auto")):
        config = s2s_side.with_model(
            workloads.w1_config(tiny=False), encoder={"lstm_kernel": kernel}, **shapes.w1_model
        )
        fixed_length_data(config, length=32, batch_size=shapes.w1_batch)
        batches = workloads.training_batches(config, min(shapes.vocab, 8000))
        print(f"compiling W1 {name}", flush=True)
        systems.append(
            s2s_side.train_system(
                "W1 b256 f32", name, config, min(shapes.vocab, 8000), batches,
                note=f"encoder lstm_kernel={kernel}",
            )
        )  # fmt: skip
    if not peers.missing("torch"):
        from benchmarks.peers import torch_lstm

        systems.append(
            torch_lstm.train_system("W1 b256 f32", config, min(shapes.vocab, 8000), batches)
        )
    run.measure(systems, run.facts.get("ceiling float32"))
    _mfu_rows(run, systems, "float32")


def section_w3(run: Run) -> None:
    shapes = run.shapes
    config = _w2_config(shapes, dtype="bfloat16", kernel="auto")
    batch = workloads.synthetic_batches(
        batch=shapes.decode_batch, src_len=shapes.decode_length, tgt_len=1, vocab=shapes.vocab,
        count=1, seed=config.seed,
    )[0]  # fmt: skip
    model, params = s2s_side.random_transformer(config, shapes.vocab, config.seed)
    hf_model = None
    if not peers.missing("hf_marian"):
        import torch

        from benchmarks.peers import hf_marian

        hf_model = hf_marian.build_model(config.model, shapes.vocab, config.seed)
        hf_model = hf_model.to(peers.torch_device(), dtype=torch.bfloat16).eval()
    for label, beam in (("W3 beam 4", 4), ("W3 greedy", 1)):
        kw = dict(beam_size=beam, length=shapes.decode_length)
        print(f"compiling {label}", flush=True)
        systems = [
            s2s_side.decode_system(
                label, "s2s_jax", model, params, batch["inputs"], batch["inputs_mask"], **kw
            )
        ]
        if hf_model is not None:
            systems.append(hf_marian.generate_system(label, hf_model, batch["inputs"], **kw))
        run.measure(systems)


def section_parity(run: Run) -> None:
    """bfloat16 vs float32: the same init, batches and dropout keys; relative loss gaps."""
    from s2s_jax.models.registry import build_model
    from s2s_jax.training.optimizer import OptimizerConfig, make_optimizer
    from s2s_jax.training.state import make_init_fn
    from s2s_jax.training.step import jit_train_step

    shapes = run.shapes
    curves = {}
    for dtype in ("float32", "bfloat16"):
        config = _w2_config(shapes, dtype=dtype, kernel="auto")
        batches = [jax.device_put(b) for b in _w2_batches(shapes, config, copy=True)]
        model, _ = build_model(config.model, shapes.vocab, shapes.vocab)
        tx, schedule = make_optimizer(OptimizerConfig.from_section(config.train))
        state = jax.jit(make_init_fn(model, tx))(jax.random.key(0))
        step = jit_train_step(model, tx, schedule, config.train.label_smoothing)
        losses = []
        for i in range(shapes.parity_steps):
            state, metrics = step(state, batches[i % len(batches)], jax.random.key(1))
            losses.append(float(metrics["loss"]))
        curves[dtype] = np.array(losses)
    gap = np.abs(curves["bfloat16"] - curves["float32"]) / np.abs(curves["float32"])
    run.facts["parity max relative loss gap"] = float(gap.max())
    for dtype, curve in curves.items():
        marks = ", ".join(f"{curve[i]:.3f}" for i in (0, len(curve) // 2, len(curve) - 1))
        print(f"parity {dtype} loss at steps 0, mid, last: {marks}", flush=True)
    print(f"parity: largest relative gap {100 * gap.max():.2f}% over {len(gap)} steps", flush=True)


RUNNERS: dict[str, Callable[[Run], None]] = {
    "ceiling": section_ceiling,
    "W2": section_w2,
    "W1": section_w1,
    "W3": section_w3,
    "parity": section_parity,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke run)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed calls per system per round")
    parser.add_argument("--strict", action="store_true", help="a failing section fails the run")
    parser.add_argument("--json", help="write rows and facts here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"Unknown sections {unknown}; choose from {', '.join(SECTIONS)}.")
    run = Run(TINY if args.tiny else FULL, args.rounds, args.steps, args.strict)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    for name in sections:
        start = time.perf_counter()
        print(f"=== {name}", flush=True)
        try:
            RUNNERS[name](run)
        except Exception as error:  # one section's failure must not lose the others' figures
            if run.strict:
                raise
            run.errors.append(f"{name}: {type(error).__name__}: {error}")
            print(f"{name} FAILED: {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(limit=4)
        print(f"=== {name} took {time.perf_counter() - start:.0f} s", flush=True)
    result = {
        "device": device.device_kind,
        "rows": [dataclasses.asdict(r) for r in run.rows],
        "facts": run.facts,
        "errors": run.errors,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
