"""Tests for s2s_jax.checkpointing: round trips, retention, async saves, crashes, config checks.

Restored arrays must be bitwise identical (a resumed run repeats itself exactly), so every
comparison is exact: no tolerance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.path import atomicity

from s2s_jax import checkpointing
from s2s_jax.checkpointing import CheckpointConfigError, Checkpointer, CheckpointError

TMP_SUFFIX = ".orbax-checkpoint-tmp"
CONFIG = {
    "model": {"name": "transformer", "hidden_size": 128, "dims": (4, 8), "dropout": 0.1},
    "train": {"learning_rate": 1e-3},
}
# What the config reads back as after a JSON round trip: tuples become lists.
CONFIG_JSON = {
    "model": {"name": "transformer", "hidden_size": 128, "dims": [4, 8], "dropout": 0.1},
    "train": {"learning_rate": 1e-3},
}
DATA_STATE = {"epoch": 3, "index": 17}


def init_state(params):
    """A train-state-like pytree: step, params and an optax adam state (namedtuples inside)."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt": optax.adam(1e-3).init(params),
    }


def make_params(rows: int = 8, cols: int = 3, seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w": jax.random.normal(k1, (rows, cols)),
        "b": jax.random.normal(k2, (cols,), jnp.bfloat16),
    }


def trained_state(seed: int = 0):
    """A state whose optimizer moments and step are non-zero, so a mix-up would show."""
    params = make_params(seed=seed)
    state = init_state(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + seed), params)
    updates, opt = optax.adam(1e-3).update(grads, state["opt"], params)
    return {
        "step": jnp.asarray(7 + seed, jnp.int32),
        "params": optax.apply_updates(params, updates),
        "opt": opt,
    }


def abstract_like(params):
    return jax.eval_shape(init_state, params)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def step_dirs(directory: Path) -> list[str]:
    """Committed step directories (temporary ones end in TMP_SUFFIX)."""
    return sorted(p.name for p in directory.iterdir() if p.name.isdigit())


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bitwise(tmp_path, async_save):
    state = trained_state()
    with Checkpointer(tmp_path, every_steps=1, keep=2, async_save=async_save) as ckpt:
        assert ckpt.save(7, state, data_state=DATA_STATE, config=CONFIG)
        restored, data_state, config = ckpt.restore(abstract_like(make_params()), config=CONFIG)
    assert_trees_equal(restored, state)
    assert isinstance(restored["opt"][0], optax.ScaleByAdamState)
    assert data_state == DATA_STATE
    assert config == CONFIG_JSON


def test_restore_uses_abstract_shardings(tmp_path):
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    # 8 rows divide over 1, 2, 4 or 8 devices, so this runs under any fake device count.
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = trained_state()
    abstract = abstract_like(make_params())
    abstract["params"]["w"] = jax.ShapeDtypeStruct((8, 3), jnp.float32, sharding=rows)
    with Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
        ckpt.save(1, state, data_state=DATA_STATE, config=CONFIG)
        restored, _, _ = ckpt.restore(abstract, config=CONFIG)
    assert restored["params"]["w"].sharding == rows
    assert_trees_equal(restored, state)


def test_every_steps_and_keep(tmp_path):
    state = trained_state()
    with Checkpointer(tmp_path, every_steps=2, keep=2) as ckpt:
        started = [ckpt.save(s, state, data_state={"i": s}, config=CONFIG) for s in range(1, 11)]
        assert started == [s % 2 == 0 for s in range(1, 11)]
        ckpt.wait()
        assert ckpt.all_steps() == [8, 10]
        assert step_dirs(tmp_path) == ["10", "8"]
        assert ckpt.save(11, state, data_state={"i": 11}, config=CONFIG, force=True)
        assert ckpt.latest_step() == 11
    assert step_dirs(tmp_path) == ["10", "11"]
    # A fresh Checkpointer (a resumed run) sees what is on disk.
    with Checkpointer(tmp_path, every_steps=2, keep=2) as ckpt:
        assert ckpt.all_steps() == [10, 11]
        _, data_state, _ = ckpt.restore(abstract_like(make_params()), config=CONFIG, step=10)
        assert data_state == {"i": 10}


def test_saving_an_existing_step_is_skipped(tmp_path):
    with Checkpointer(tmp_path, every_steps=1, keep=3) as ckpt:
        assert ckpt.save(4, trained_state(0), data_state={"i": 0}, config=CONFIG)
        assert not ckpt.save(4, trained_state(1), data_state={"i": 1}, config=CONFIG, force=True)
        restored, data_state, _ = ckpt.restore(abstract_like(make_params()), config=CONFIG)
    assert_trees_equal(restored, trained_state(0))
    assert data_state == {"i": 0}


def test_async_save_returns_before_commit(tmp_path, monkeypatch):
    gate = threading.Event()
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def gated_finalize(self):
        # Holds the commit (the rename) until the test has looked; the timeout only guards
        # against a hang if save() were synchronous.
        gate.wait(timeout=30)
        await original(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", gated_finalize)
    state = trained_state()
    with Checkpointer(tmp_path, every_steps=1, keep=1, async_save=True) as ckpt:
        assert ckpt.save(1, state, data_state=DATA_STATE, config=CONFIG)
        assert not gate.is_set()
        assert not (tmp_path / "1").exists()
        gate.set()
        ckpt.wait()
        assert (tmp_path / "1").is_dir()
        restored, _, _ = ckpt.restore(abstract_like(make_params()), config=CONFIG)
    assert_trees_equal(restored, state)


def test_failed_async_save_raises_checkpoint_error(tmp_path, monkeypatch):
    async def failing_finalize(self):
        raise OSError("disk full")

    state = trained_state()
    with Checkpointer(tmp_path, every_steps=1, keep=2) as ckpt:
        ckpt.save(1, state, data_state=DATA_STATE, config=CONFIG)
        ckpt.wait()
        monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", failing_finalize)
        assert ckpt.save(2, state, data_state=DATA_STATE, config=CONFIG)
        with pytest.raises(CheckpointError, match=f"{tmp_path}.*disk full"):
            ckpt.wait()
        assert ckpt.all_steps() == [1]
        # Without an explicit wait() the next save reports the failure (once).
        assert ckpt.save(3, state, data_state=DATA_STATE, config=CONFIG)
        with pytest.raises(CheckpointError, match="disk full"):
            ckpt.save(4, state, data_state=DATA_STATE, config=CONFIG)
        monkeypatch.undo()
        assert ckpt.save(5, state, data_state=DATA_STATE, config=CONFIG)
        ckpt.wait()
        assert ckpt.all_steps() == [1, 5]
        assert step_dirs(tmp_path) == ["1", "5"]


def test_arrays_can_be_deleted_once_save_returns(tmp_path):
    # The train step donates its state; the async save must already hold its own copy.
    state = trained_state()
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(tmp_path, every_steps=1, keep=1, async_save=True) as ckpt:
        ckpt.save(1, state, data_state=DATA_STATE, config=CONFIG)
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        restored, _, _ = ckpt.restore(abstract_like(make_params()), config=CONFIG)
    assert_trees_equal(restored, expected)


CRASHING_SAVE = textwrap.dedent(
    """
    import os, signal, sys, threading
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from s2s_jax.checkpointing import Checkpointer

    directory, mode = sys.argv[1], sys.argv[2]
    commit = threading.Event()

    async def finalize(self):
        if mode == "at_commit":
            # Every item is on disk; die just before the rename that commits the step.
            os.kill(os.getpid(), signal.SIGKILL)
        commit.wait()  # never set: the commit cannot happen before the kill below

    atomicity.AtomicRenameTemporaryPath.finalize = finalize
    ckpt = Checkpointer(directory, every_steps=1, keep=5, async_save=True)
    state = {"big": jnp.ones((1024, 1024)), "step": jnp.asarray(2)}
    ckpt.save(2, state, data_state={"i": 2}, config={"model": {"n": 1}})
    if mode == "right_after_save":
        os.kill(os.getpid(), signal.SIGKILL)
    ckpt.wait()
    sys.exit(3)  # unreachable: finalize kills the process
    """
)


@pytest.mark.parametrize("mode", ["at_commit", "right_after_save"])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, mode):
    good = {
        "big": jnp.arange(1024 * 1024, dtype=jnp.float32).reshape(1024, 1024),
        "step": jnp.asarray(1),
    }
    config = {"model": {"n": 1}}
    with Checkpointer(tmp_path, every_steps=1, keep=5) as ckpt:
        ckpt.save(1, good, data_state={"i": 1}, config=config)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if mode == "at_commit":
        assert (tmp_path / f"2{TMP_SUFFIX}").is_dir()
    assert not (tmp_path / "2").exists()

    abstract = jax.eval_shape(lambda: good)
    # A reader leaves the temporary directory alone and must not be confused by it.
    with Checkpointer(tmp_path, every_steps=1, keep=5, read_only=True) as reader:
        assert reader.all_steps() == [1]
        restored, data_state, _ = reader.restore(abstract, config=config)
    assert_trees_equal(restored, good)
    assert data_state == {"i": 1}

    # The resumed run saves step 2 again over the leftovers.
    with Checkpointer(tmp_path, every_steps=1, keep=5) as ckpt:
        assert ckpt.latest_step() == 1
        assert ckpt.save(2, good, data_state={"i": 2}, config=config)
        ckpt.wait()
        assert ckpt.all_steps() == [1, 2]
        restored, data_state, _ = ckpt.restore(abstract, config=config)
    assert_trees_equal(restored, good)
    assert data_state == {"i": 2}
    assert not [p for p in os.listdir(tmp_path) if TMP_SUFFIX in p]


def test_model_config_mismatch_names_each_key(tmp_path):
    with Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
        ckpt.save(1, trained_state(), data_state=DATA_STATE, config=CONFIG)
        other = {
            "model": {**CONFIG["model"], "hidden_size": 256, "layers": 2},
            "train": {"learning_rate": 0.5},  # only "model" has to match
        }
        with pytest.raises(CheckpointConfigError) as info:
            ckpt.restore(abstract_like(make_params()), config=other)
    message = str(info.value)
    assert "model.hidden_size: checkpoint has 128, this run has 256" in message
    assert "model.layers: checkpoint has <absent>, this run has 2" in message
    assert "learning_rate" not in message
    assert "--workdir" in message and str(tmp_path / "1") in message


def test_a_checkpoint_from_before_composable_models_is_refused_in_one_line(tmp_path):
    old_style = {"model": {"family": "rnn", "hidden_size": 128}, "train": {}}
    with Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
        ckpt.save(1, trained_state(), data_state=DATA_STATE, config=old_style)
        with pytest.raises(CheckpointConfigError) as info:
            ckpt.restore(abstract_like(make_params()), config=CONFIG)
    message = str(info.value)
    assert "before encoders and decoders became separate model parts" in message
    assert "model.family='rnn'" in message and "\n" not in message


def test_tuple_and_list_config_values_match(tmp_path):
    # The run's config holds tuples; the saved one lists; they must not count as different.
    with Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
        ckpt.save(1, trained_state(), data_state=DATA_STATE, config=CONFIG_JSON)
        _, _, saved = ckpt.restore(abstract_like(make_params()), config=CONFIG)
    assert saved == CONFIG_JSON


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (make_params(rows=6), "params.w: checkpoint has shape (8, 3), this run has (6, 3)"),
        ({**make_params(), "extra": jnp.zeros(2)}, "params.extra: in this run's state but not"),
        ({"w": make_params()["w"]}, "params.b: in the checkpoint but not in this run's state"),
    ],
    ids=["shape", "extra_leaf", "missing_leaf"],
)
def test_state_layout_mismatch(tmp_path, params, expected):
    with Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
        ckpt.save(1, trained_state(), data_state=DATA_STATE, config=CONFIG)
        with pytest.raises(CheckpointConfigError, match="does not fit") as info:
            ckpt.restore(abstract_like(params), config=CONFIG)
    assert expected in str(info.value)
    assert str(tmp_path / "1") in str(info.value)


def test_orbax_restore_failure_after_the_layout_check_is_damage(tmp_path, monkeypatch):
    # The layout pre-check compares structure and shapes first, so an Orbax failure after it is
    # damage to the files, not a config mismatch: one line naming the step and what failed.
    monkeypatch.setattr(checkpointing, "state_differences", lambda saved, abstract: [])
    with Checkpointer(tmp_path / "run", every_steps=1, keep=1) as ckpt:
        ckpt.save(1, trained_state(), data_state=DATA_STATE, config=CONFIG)
        with pytest.raises(CheckpointError, match=r"could be read: step 1: ValueError") as info:
            ckpt.restore(abstract_like({**make_params(), "extra": jnp.zeros(2)}), config=CONFIG)
    assert "\n" not in str(info.value)
    assert [p.name.split("-")[0] for p in (tmp_path / "run.damaged").iterdir()] == ["1"]


def test_missing_checkpoint(tmp_path):
    with Checkpointer(tmp_path / "run", every_steps=1, keep=1) as ckpt:
        assert (tmp_path / "run").is_dir()
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(CheckpointError, match=str(tmp_path / "run")):
            ckpt.restore(abstract_like(make_params()), config=CONFIG)
        with pytest.raises(CheckpointError, match=str(tmp_path / "run")):
            ckpt.read_config()
        ckpt.save(2, trained_state(), data_state=DATA_STATE, config=CONFIG)
        with pytest.raises(CheckpointError, match=r"step 3 .*saved steps are \[2\]"):
            ckpt.restore(abstract_like(make_params()), config=CONFIG, step=3)


def test_read_only_reader_follows_a_writer(tmp_path):
    reader = Checkpointer(tmp_path / "run", every_steps=1, keep=1, read_only=True)
    assert not (tmp_path / "run").exists() and reader.latest_step() is None
    with Checkpointer(tmp_path / "run", every_steps=1, keep=2) as writer:
        writer.save(1, trained_state(), data_state=DATA_STATE, config=CONFIG)
        writer.save(2, trained_state(), data_state=DATA_STATE, config=CONFIG_JSON | {"x": 1})
    assert reader.all_steps() == [1, 2]
    assert reader.read_config(step=1) == CONFIG_JSON
    assert reader.read_config() == CONFIG_JSON | {"x": 1}
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(3, trained_state(), data_state=DATA_STATE, config=CONFIG)
    reader.close()


def test_relative_directory_is_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("ckpt", every_steps=1, keep=1) as ckpt:
        assert str(ckpt.directory) == str(tmp_path / "ckpt")
        assert (tmp_path / "ckpt").is_dir()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1}, "non-negative"),
        ({"data_state": {"pos": np.int64(3)}}, "data_state must be JSON-serializable"),
        ({"config": {"train": {}}}, "'model' section"),
        ({"config": {"model": 3}}, "'model' section"),
    ],
    ids=["negative_step", "numpy_scalar", "no_model", "model_not_dict"],
)
def test_save_rejects_bad_input(tmp_path, kwargs, match):
    args = {"step": 2, "data_state": DATA_STATE, "config": CONFIG} | kwargs
    with (
        Checkpointer(tmp_path, every_steps=2, keep=1) as ckpt,
        pytest.raises(ValueError, match=match),
    ):
        ckpt.save(args.pop("step"), trained_state(), **args)


@pytest.mark.parametrize("kwargs", [{"every_steps": 0, "keep": 1}, {"every_steps": 1, "keep": 0}])
def test_constructor_rejects_non_positive(tmp_path, kwargs):
    with pytest.raises(ValueError, match="must be a positive int"):
        Checkpointer(tmp_path, **kwargs)


def test_checkpoint_predating_a_model_option_matches_its_default():
    from s2s_jax.checkpointing import config_differences

    # `unroll` / `scan_layers` added after the checkpoint was written, kept at their defaults.
    saved = {"encoder": {"type": "rnn", "hidden_size": 32}, "decoder": {"type": "transformer"}}
    run = {
        "encoder": {"type": "rnn", "hidden_size": 32, "unroll": 1},
        "decoder": {"type": "transformer", "scan_layers": True},
    }
    assert config_differences(saved, run) == []
    run["encoder"]["unroll"] = 8
    lines = config_differences(saved, run)
    assert len(lines) == 1 and lines[0].startswith("model.encoder.unroll: checkpoint has")


def test_a_checkpoint_moves_between_attention_and_lstm_kernels():
    from s2s_jax.checkpointing import config_differences

    saved = {
        "encoder": {"type": "rnn", "hidden_size": 32, "lstm_kernel": "cudnn"},
        "decoder": {"type": "transformer", "attention_kernel": "cudnn"},
    }
    run = {
        "encoder": {"type": "rnn", "hidden_size": 32, "lstm_kernel": "scan"},
        "decoder": {"type": "transformer", "attention_kernel": "einsum"},
    }
    assert config_differences(saved, run) == []
    run["encoder"]["hidden_size"] = 64  # a real difference still shows
    assert config_differences(saved, run) == [
        "model.encoder.hidden_size: checkpoint has 32, this run has 64"
    ]
