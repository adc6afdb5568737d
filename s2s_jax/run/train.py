"""The training loop: train, evaluate periodically, checkpoint, resume."""

from __future__ import annotations

import functools
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.config import ConfigError, to_dict
from s2s_jax.decoding.generate import decoding_model, generate
from s2s_jax.evaluation.evaluate import EvalResult, evaluate
from s2s_jax.evaluation.report import (
    format_examples,
    format_metrics,
    write_hypotheses,
    write_results,
)
from s2s_jax.parallel import multihost, sharding
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.profiling import Tracer, dump_hlo
from s2s_jax.run.components import Components, build
from s2s_jax.run.metrics_writer import MetricWriter
from s2s_jax.run.run_info import write_run_info
from s2s_jax.training.state import TrainState, param_count
from s2s_jax.training.step import jit_eval_step, jit_train_step
from s2s_jax.training.throughput import FlopsMeter, timed_first_step


def _log(message: str) -> None:
    if multihost.is_main_process():
        tqdm.write(message)


def make_checkpointer(workdir: Path, config: ml_collections.ConfigDict) -> Checkpointer:
    return Checkpointer(
        workdir / "checkpoints",
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )


def restore_or_init(c: Components, ckpt: Checkpointer) -> TrainState:
    """The latest checkpoint's state (and data position), or a fresh state, laid out on the mesh.

    The abstract state carries this run's shardings, so a checkpoint written on another mesh or
    by another number of processes is resharded while it is read.
    """
    if ckpt.latest_step() is None:
        return c.init_state()
    state, data_state, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config())
    c.data.train.set_state(data_state)
    _log(f"Resumed from step {int(state.step)} ({ckpt.directory}).")
    return state


def make_eval_fns(c: Components) -> tuple:
    """``(eval_step, decoder)`` for `evaluate`: jitted on ``c.mesh``, fed host batches.

    ``decoder(params)`` returns ``decode(inputs, inputs_mask)`` bound to ``params``: it puts them
    in the model's decoding layout once per evaluation (a scanned Transformer's layers unstacked,
    their shardings carried over by the slicing), not once per eval batch. Every process holds
    the whole eval split; batches go onto the mesh row-sharded when they split evenly, and
    results come back replicated so every process can read them.
    """
    shardings = c.shardings
    eval_step = jit_eval_step(c.model, shardings)
    twin = decoding_model(c.model, c.abstract_state().params)
    if twin is c.model:  # the params already are in the decoding layout
        to_decoding = lambda params: params  # noqa: E731
    else:
        to_decoding = jax.jit(lambda params: c.model.for_decoding(params)[1])
    decode = functools.partial(generate, model=twin, cfg=c.decode_config)
    generate_fn = jax.jit(
        sharding.in_sharding_context(decode, c.mesh), out_shardings=shardings.replicated
    )

    def put(tree):
        rows = jax.tree.leaves(tree)[0].shape[0]
        return sharding.put_global(tree, sharding.eval_batch_sharding(c.mesh, rows))

    def decoder(params):
        prepared = to_decoding(params)
        return lambda inputs, inputs_mask: generate_fn(prepared, *put((inputs, inputs_mask)))

    return lambda params, batch: eval_step(params, put(batch)), decoder


def run_evaluation(c: Components, params: Any, eval_step, decoder) -> EvalResult:
    """Evaluates ``params`` on the run's held-out split (teacher-forced and decoded).

    Reports loss, token accuracy and the run's metrics (``eval.metrics``, or the data's
    defaults when that is empty: see `Components.metrics`).
    """
    return evaluate(
        params,
        c.data.eval_batches,
        c.data.eval_examples,
        eval_step=eval_step,
        decode=decoder(params),
        tgt_vocab=c.data.tgt_vocab,
        metrics=c.metrics,
    )


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag, so the loop can checkpoint and stop cleanly.

    Cluster schedulers and TPU maintenance send SIGTERM before killing a job; the loop saves the
    current step and returns, and running the same command again resumes from there.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Window:
    """Accumulates per-step metrics between log points without forcing device syncs."""

    def __init__(self, meter: FlopsMeter | None = None):
        self.meter = meter
        self.reset()

    def reset(self):
        self.metrics, self.flops, self.start = [], 0.0, time.perf_counter()

    def add(self, metrics):
        self.metrics.append(metrics)

    def summary(self) -> dict[str, float]:
        fetched = jax.device_get(self.metrics)
        elapsed = time.perf_counter() - self.start
        out = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        tokens = float(np.sum([m["tokens"] for m in fetched]))
        out.update(tokens=tokens, tokens_per_sec=tokens / elapsed, step_time=elapsed / len(fetched))
        if self.flops:
            out["flops_per_step"] = self.flops / len(fetched)
            out.update(self.meter.summary(self.flops, elapsed))
        return out


def check_workdir(workdir: Path) -> None:
    """Creates ``workdir`` and checks that files can be written there, before any work.

    Raises:
      ConfigError: one line naming the path and the OS's reason (a file in the way, a
        read-only or full file system, no permission).
    """
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is a file, not a directory: pick another path.")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"--workdir {workdir} cannot be written: {e.strerror or e}. Pick a writable path."
        ) from e


class TrainingDiverged(ValueError):
    """The loss or the parameters stopped being finite; nothing after the last good checkpoint
    was saved."""


class _FiniteWatch:
    """Tracks, without a device sync per step, the first step whose loss was not finite.

    Checked before every save (with the parameters themselves) and at every log point, so a
    diverged state is never written and a good checkpoint is never rotated out for it.
    """

    def __init__(self):
        self.first_bad = jnp.zeros((), jnp.int32)  # 0: every step so far was finite

    def add(self, step: int, loss: jax.Array) -> None:
        bad = ~jnp.isfinite(loss) & (self.first_bad == 0)
        self.first_bad = jnp.where(bad, jnp.int32(step), self.first_bad)

    def check(self, step: int, params: Any | None, last_saved: int | None) -> None:
        """Raises ``TrainingDiverged`` naming the step if a loss (or a parameter) is not finite."""
        first_bad = int(self.first_bad)
        if not first_bad and params is not None and not bool(_all_finite(params)):
            first_bad = step
        if first_bad:
            kept = f"step {last_saved}" if last_saved else "none yet"
            raise TrainingDiverged(
                f"Training diverged: the loss or the parameters stopped being finite by step "
                f"{first_bad} (checked at step {step}); nothing from then on was saved (last "
                f"checkpoint: {kept}). Lower train.learning_rate, set train.grad_clip_norm, or "
                "use float32, then rerun (it resumes from the last checkpoint)."
            )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns eval metrics.

    Returns an empty dict when a SIGTERM/SIGINT stopped the run early (after checkpointing).
    """
    multihost.initialize(multihost.DistributedConfig.from_section(config.parallel))
    if "://" in str(workdir):
        raise ConfigError(
            f"Workdir {workdir} is a URL; metrics, run info and tokenizers are written with local "
            "file APIs, so use a path on shared storage every host sees (e.g. a bucket mounted "
            "with gcsfuse at /mnt/bucket, then --workdir /mnt/bucket/runs/x)."
        )
    workdir = Path(workdir).resolve()
    check_workdir(workdir)
    mesh = make_mesh(MeshConfig.from_section(config.parallel))
    c = build(config, mesh=mesh, workdir=workdir)
    with make_checkpointer(workdir, config) as ckpt:
        state = restore_or_init(c, ckpt)  # first: a refused restore must leave the workdir as is
        if multihost.is_main_process():
            write_run_info(workdir, to_dict(config))
        _log(
            f"{config.name}: {c.model_config.encoder_type} encoder, "
            f"{c.model_config.decoder_type} decoder, "
            f"{param_count(state.params):,} params; {len(c.data.eval_examples)} eval examples; "
            f"buckets {c.data.buckets}; mesh {dict(mesh.shape)} over {jax.process_count()} "
            f"process(es); workdir {workdir}"
        )
        eval_fns = make_eval_fns(c)
        state, result, finished = _train(c, state, ckpt, workdir, eval_fns)
        ckpt.wait()
    if not finished:
        return {}
    if result is None:  # already trained to num_steps: evaluate the restored state
        result = run_evaluation(c, state.params, *eval_fns)
    _finish(workdir, c, result)
    return result.metrics


def _train(c: Components, state: TrainState, ckpt: Checkpointer, workdir: Path, eval_fns):
    """Runs steps up to ``train.num_steps``; returns (state, last eval result, finished)."""
    config = c.config
    train_step = jit_train_step(
        c.model, c.tx, c.schedule, config.train.label_smoothing,
        grad_accum_steps=config.parallel.grad_accum_steps, shardings=c.shardings,
    )  # fmt: skip
    _, dropout_rng = c.rngs()
    meter = _flops_meter(c, train_step)
    num_steps, result, window = config.train.num_steps, None, _Window(meter)
    watch, last_saved = _FiniteWatch(), ckpt.latest_step()
    first = int(state.step) + 1
    disable = None if multihost.is_main_process() else True  # None: only on a terminal
    bar = tqdm(total=num_steps, initial=int(state.step), desc="train", disable=disable)
    tracer = Tracer(workdir, config.profile.trace_steps)
    with PreemptionGuard() as preemption, MetricWriter(workdir) as writer, bar, tracer:
        for step in range(first, num_steps + 1):
            batch = sharding.shard_batch(
                next(c.data.train), c.shardings.batch, config.data.batch_size
            )
            flops = 0.0 if meter is None else meter.flops(state, batch, dropout_rng)
            tracer.step(step, wait_for=state)
            if step == first:
                (state, metrics), seconds = _first_step(c, workdir, train_step, state, batch)
                writer.write(step, "compile", {"first_step_seconds": seconds})
                window.reset()  # compilation is not training throughput
            else:
                state, metrics = train_step(state, batch, dropout_rng)
            window.flops += flops
            window.add(metrics)
            watch.add(step, metrics["loss"])
            bar.update(1)
            if step % config.train.log_every == 0 or step == num_steps:
                watch.check(step, None, last_saved)
                summary = window.summary()
                writer.write(step, "train", summary)
                bar.set_postfix(
                    loss=f"{summary['loss']:.3f}", tok_s=f"{summary['tokens_per_sec']:.0f}"
                )
                if bar.disable:
                    _log(_format_train(step, summary))
                window.reset()
            if step % config.eval.every_steps == 0 or step == num_steps:
                watch.check(step, None, last_saved)
                result = run_evaluation(c, state.params, *eval_fns)
                writer.write(step, "eval", result.metrics)
                _log(_format_eval(step, result))
                window.reset()  # evaluation time is not training throughput
            stop = multihost.any_process(preemption.requested)
            data_state = c.data.train.get_state()
            force = step == num_steps or stop
            if force or step % config.checkpoint.every_steps == 0:
                watch.check(step, state.params, last_saved)  # never save a diverged state
            if ckpt.save(step, state, data_state=data_state, config=c.checkpoint_config(),
                         force=force):  # fmt: skip
                last_saved = step
            if stop:
                _log(f"Stopped by a signal at step {step}; checkpoint saved. Rerun to resume.")
                return state, result, False
    return state, result, True


def _flops_meter(c: Components, train_step) -> FlopsMeter | None:
    profile = c.config.profile
    if not profile.log_mfu:
        return None
    return FlopsMeter(
        train_step, dtype=c.config.model.dtype, peak_override=profile.peak_flops,
        devices=c.mesh.size,
    )  # fmt: skip


def _first_step(c: Components, workdir: Path, train_step, state: TrainState, batch):
    """The first step, timed with its compilation; dumps the optimized HLO if asked."""
    _, dropout_rng = c.rngs()
    out, seconds = timed_first_step(train_step, state, batch, dropout_rng)
    _log(f"First step (compile + run) took {seconds:.1f} s.")
    if c.config.profile.dump_hlo and multihost.is_main_process():  # after: keeps the timing true
        path = dump_hlo(train_step.lower(out[0], batch, dropout_rng), workdir / "train_step.hlo")
        _log(f"Wrote the optimized HLO of the train step to {path}")
    return out, seconds


def _format_train(step: int, s: dict[str, float]) -> str:
    mfu = f" {s['flops_per_sec'] / 1e9:.1f} GFLOP/s MFU {s['mfu']:.1%}" if "mfu" in s else ""
    return (
        f"step {step}: loss {s['loss']:.4f} acc {s['accuracy']:.3f} "
        f"lr {s['learning_rate']:.2e} {s['tokens_per_sec']:.0f} tok/s{mfu}"
    )


def _format_eval(step: int, r: EvalResult) -> str:
    return f"eval @ {step}: {format_metrics(r)}"


def _finish(workdir: Path, c: Components, result: EvalResult) -> None:
    if jax.process_index() != 0:
        return
    write_results(workdir / "eval_results.json", result)
    write_hypotheses(workdir / "hypotheses.txt", result.hypotheses)
    n = c.config.eval.num_show
    _log(f"Examples (held-out):\n{format_examples(c.data.eval_examples, result.hypotheses, n)}")
