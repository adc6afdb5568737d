"""End-to-end training: a tiny run per model family, and bit-exact resume after preemption."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from s2s_jax.checkpointing import CheckpointConfigError, Checkpointer
from s2s_jax.config import ConfigError, apply_overrides, load_experiment
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.run import train as loop
from s2s_jax.run.components import build
from s2s_jax.run.inference import evaluate_workdir
from s2s_jax.run.metrics_writer import read_metrics

TINY = {
    "rnn": "experiments/reverse_attention.py:tiny",
    "rnn_gru_bahdanau": "experiments/addition_bahdanau.py:tiny",
    "transformer": "experiments/reverse_transformer.py:tiny",
    "transformer_to_lstm": "experiments/reverse_transformer_lstm.py:tiny",
    "lstm_to_transformer": "experiments/reverse_lstm_transformer.py:tiny",
    "features_lstm": "experiments/noisy_digits_lstm.py:tiny",
    "features_transformer": "experiments/noisy_digits_transformer.py:tiny",
}


def tiny_config(name="rnn", **overrides):
    path, _, variant = TINY[name].partition(":")
    return apply_overrides(load_experiment(path, variant), list(overrides.items()))


def final_state(config, workdir):
    c = build(config, workdir=workdir)
    with Checkpointer(workdir / "checkpoints", every_steps=1, keep=1, read_only=True) as ckpt:
        state, data_state, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config())
    return state, data_state


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_run_writes_workdir(tmp_path, name):
    config = tiny_config(name)
    metrics = loop.train_and_evaluate(config, tmp_path)
    assert 0.0 <= metrics["exact_match"] <= 1.0 and np.isfinite(metrics["loss"])
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    assert all(r["tokens_per_sec"] > 0 for r in train_rows)
    # Loss falls over 20 steps even on the tiny variant (lr 3e-3, fixed seed).
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20]
    assert json.loads((tmp_path / "config.json").read_text())["name"] == config.name
    assert json.loads((tmp_path / "eval_results.json").read_text()) == pytest.approx(metrics)
    hypotheses = (tmp_path / "hypotheses.txt").read_text().splitlines()
    assert len(hypotheses) == config.eval.max_examples
    with Checkpointer(tmp_path / "checkpoints", every_steps=1, keep=1, read_only=True) as ckpt:
        assert ckpt.all_steps() == [10, 20]
    # The trained workdir decodes with beam search too; teacher-forced figures do not depend
    # on the decoding, so they repeat the run's own.
    beam = evaluate_workdir(tmp_path, beam_size=2).metrics
    assert 0.0 <= beam["exact_match"] <= 1.0
    assert beam["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def _preempt_after(n_steps, monkeypatch):
    real = loop.jit_train_step

    def patched(*args, **kwargs):
        step_fn, calls = real(*args, **kwargs), []

        def wrapped(*a):
            out = step_fn(*a)
            calls.append(1)
            if len(calls) == n_steps:
                os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before preemption
            return out

        return wrapped

    monkeypatch.setattr(loop, "jit_train_step", patched)


def test_preempted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch):
    # Dropout: the resumed RNG must line up too.
    config = tiny_config(**{"model.encoder.dropout": "0.2", "model.decoder.dropout": "0.2"})
    loop.train_and_evaluate(config, tmp_path / "straight")

    with monkeypatch.context() as m:
        _preempt_after(7, m)
        assert loop.train_and_evaluate(config, tmp_path / "resumed") == {}
    with Checkpointer(
        tmp_path / "resumed" / "checkpoints", every_steps=1, keep=9, read_only=True
    ) as ckpt:
        assert ckpt.latest_step() == 7
    loop.train_and_evaluate(config, tmp_path / "resumed")

    (a, data_a), (b, data_b) = (final_state(config, tmp_path / d) for d in ("straight", "resumed"))
    assert int(a.step) == int(b.step) == 20
    assert data_a == data_b
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-identical


def test_sharded_run_with_grad_accumulation(tmp_path):
    # The Transformer on a 2-D mesh (4-way batch, 2-way tensor) in 2 micro-batches per step.
    config = tiny_config(
        "transformer", **{"parallel.data": "4", "parallel.tensor": "2",
                          "parallel.grad_accum_steps": "2"}
    )  # fmt: skip
    metrics = loop.train_and_evaluate(config, tmp_path)
    assert np.isfinite(metrics["loss"])
    train_rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    # Restored onto the run's mesh, parameters come back sharded as they were trained.
    c = build(config, mesh=make_mesh(MeshConfig.from_section(config.parallel)))
    with Checkpointer(tmp_path / "checkpoints", every_steps=1, keep=1, read_only=True) as ckpt:
        state, _, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config())
    assert int(state.step) == config.train.num_steps
    query = state.params["encoder"]["layers"]["self_attention"]["query"]["kernel"]
    assert query.shape == (1, 16, 2, 8)  # [layers, embed, heads, kv]
    assert query.addressable_shards[0].data.shape == (1, 16, 1, 8)  # heads split 2 ways


def test_profiling_switches(tmp_path):
    config = tiny_config(
        "transformer",
        **{"profile.log_mfu": "true", "profile.dump_hlo": "true", "profile.trace_steps": "(3,5)",
           "profile.peak_flops": "1e11"},  # a fixed peak keeps the test fast (no matmul run)
    )  # fmt: skip
    loop.train_and_evaluate(config, tmp_path)
    assert (tmp_path / "train_step.hlo").read_text().startswith("HloModule")
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["split"] for r in rows].count("compile") == 1
    train = [r for r in rows if r["split"] == "train"]
    assert all(r["flops_per_step"] > 0 and 0 < r["mfu"] < 1 for r in train)
    # MFU is achieved FLOP/s over the given per-device peak times the devices of the mesh.
    peak = 1e11 * jax.device_count()
    assert train[-1]["mfu"] == pytest.approx(train[-1]["flops_per_sec"] / peak, rel=1e-6)


def test_url_workdir_is_refused_clearly(tmp_path):
    from s2s_jax.config import ConfigError

    with pytest.raises(ConfigError, match="gcsfuse"):
        loop.train_and_evaluate(tiny_config(), "gs://bucket/run")


def test_eval_log_line_shows_the_metrics_computed():
    from s2s_jax.evaluation.evaluate import EvalResult

    base = {"loss": 1.5, "token_accuracy": 0.5, "exact_match": 0.25}
    synthetic = loop._format_eval(7, EvalResult(base, [], {"3-5": (0.25, 4)}))
    assert synthetic.startswith("eval @ 7: loss 1.5000") and "bleu" not in synthetic
    assert synthetic.endswith("exact_match 0.2500 | len 3-5: 25.0% (n=4)")
    text = {"loss": 1.5, "token_accuracy": 0.5, "bleu": 12.345, "chrf": 40.0, "ter": 80.5}
    line = loop._format_eval(7, EvalResult(text, [], {}))
    assert line.endswith("bleu 12.3450 chrf 40.0000 ter 80.5000")


def test_a_diverged_run_stops_and_keeps_its_good_checkpoints(tmp_path):
    overrides = {"train.num_steps": "4", "checkpoint.every_steps": "2", "checkpoint.keep": "2",
                 "eval.every_steps": "100"}  # fmt: skip
    loop.train_and_evaluate(tiny_config(**overrides), tmp_path)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["2", "4"]
    # Resumed with a learning rate that blows the parameters up at step 5.
    overrides.update({"train.num_steps": "8", "train.learning_rate": "1e38"})
    with pytest.raises(loop.TrainingDiverged, match=r"by step 6 .*last checkpoint: step 4"):
        loop.train_and_evaluate(tiny_config(**overrides), tmp_path)
    # Nothing diverged was written, and the good checkpoints were not rotated out.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == saved
    state, _ = final_state(tiny_config(**overrides), tmp_path)
    assert int(state.step) == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    # Resuming on another task is refused like another model (same vocabulary and shapes).
    overrides.update({"train.learning_rate": "1e-3", "data.task": "sort"})
    with pytest.raises(CheckpointConfigError, match="data.task: checkpoint has 'reverse'"):
        loop.train_and_evaluate(tiny_config(**overrides), tmp_path)


def test_a_workdir_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        loop.check_workdir(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be written: Not a directory"):
        loop.check_workdir(tmp_path / "file" / "run")
    loop.check_workdir(tmp_path / "new" / "run")  # created, parents too
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
