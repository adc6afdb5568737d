"""Multi-process training: 2 local processes agree with 1, and 1 process resumes their run.

The processes run the real entry point (`python -m s2s_jax.run.cli train`) with 4 CPU devices each,
a coordinator on 127.0.0.1 and JAX's default CPU collectives (gloo).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.config import apply_overrides, base_config, load_experiment
from s2s_jax.parallel.multihost import DistributedConfig, any_process, initialize, is_loopback
from s2s_jax.run import train as loop
from s2s_jax.run.components import build
from s2s_jax.run.metrics_writer import read_metrics

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "experiments/reverse_attention.py:tiny"
TIMEOUT_S = 240  # per subprocess; a healthy run takes ~30 s on 2 shared cores
# A constant schedule, so a run stopped at step 6 and continued to 12 equals a straight run.
COMMON = {
    "train.schedule": "constant",
    "eval.every_steps": "6",
    "checkpoint.every_steps": "3",
    "checkpoint.keep": "5",
}
TWO_D = {"parallel.data": "4", "parallel.tensor": "2"}  # the 2-process (and reference) mesh
FSDP = {"parallel.data": "1", "parallel.fsdp": "-1"}  # the mesh the checkpoint is resumed on


def config_with(**overrides):
    path, _, variant = EXPERIMENT.partition(":")
    return apply_overrides(load_experiment(path, variant), list(overrides.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(workdir: Path, overrides: dict[str, str], num_processes: int = 2) -> None:
    """Runs ``s2s train`` as ``num_processes`` local processes of one distributed run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    flags = {
        **overrides,
        "parallel.distributed": "true",
        "parallel.coordinator_address": f"127.0.0.1:{free_port()}",
        "parallel.num_processes": str(num_processes),
    }
    base = [sys.executable, "-m", "s2s_jax.run.cli", "train", "--config", EXPERIMENT]
    base += ["--workdir", str(workdir), *(f"--config.{k}={v}" for k, v in flags.items())]
    procs = [
        subprocess.Popen(
            [*base, f"--config.parallel.process_id={i}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(num_processes)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-4000:]}"


def saved_state(workdir: Path, step: int):
    c = build(config_with(**COMMON))
    with Checkpointer(workdir / "checkpoints", every_steps=1, keep=1, read_only=True) as ckpt:
        state, data_state, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config(),
                                            step=step)  # fmt: skip
    return jax.device_get(state), data_state


def rows(workdir: Path, split: str) -> dict[int, dict]:
    found = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == split]
    by_step = {r["step"]: r for r in found}
    assert len(by_step) == len(found), "a step was logged twice: only process 0 may write"
    return by_step


def assert_states_close(a, b):
    # Same maths on the same mesh shape; only the reduction order of cross-device sums (gloo
    # between processes vs in-process) differs: float32 rounding ~1e-7, grown by 6-12 Adam
    # steps to ~1e-6. 2e-5 leaves margin; one step moves params by ~lr = 3e-3.
    assert int(a.step) == int(b.step)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-5)


@pytest.mark.slow  # ~2-4 min: 3 multi-process runs; .ci/run runs the slow tests too
def test_two_processes_match_one_and_resume_on_another_mesh(tmp_path):
    multi, straight, resumed = tmp_path / "multi", tmp_path / "straight", tmp_path / "resumed"
    run_processes(multi, {**COMMON, **TWO_D, "train.num_steps": "6"})
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["3", "6"]
    assert len(json.loads((multi / "run_info.json").read_text())["devices"]) == 8  # 2 x 4
    # The reference: one process, the same global mesh shape on 8 local devices, 12 steps.
    loop.train_and_evaluate(config_with(**COMMON, **TWO_D, **{"train.num_steps": "12"}), straight)

    state_multi, data_multi = saved_state(multi, 6)
    state_straight, data_straight = saved_state(straight, 6)
    assert data_multi == data_straight  # both processes walked the same global batches
    assert_states_close(state_multi, state_straight)
    train_multi, train_straight = rows(multi, "train"), rows(straight, "train")
    assert train_multi[5]["loss"] == pytest.approx(train_straight[5]["loss"], rel=1e-5)
    eval_multi, eval_straight = rows(multi, "eval")[6], rows(straight, "eval")[6]
    assert eval_multi["loss"] == pytest.approx(eval_straight["loss"], rel=1e-5)
    assert eval_multi["exact_match"] == eval_straight["exact_match"]
    assert json.loads((multi / "eval_results.json").read_text())["loss"] == pytest.approx(
        eval_multi["loss"]
    )

    # One process, another mesh (FSDP over 8 devices), restores the 2-process checkpoint.
    shutil.copytree(multi, resumed)
    loop.train_and_evaluate(config_with(**COMMON, **FSDP, **{"train.num_steps": "12"}), resumed)
    assert sorted(rows(resumed, "train")) == [5, 6, 10, 12]  # continued after step 6
    state_resumed, data_resumed = saved_state(resumed, 12)
    state_straight, data_straight = saved_state(straight, 12)
    assert data_resumed == data_straight
    assert_states_close(state_resumed, state_straight)


def test_distributed_config_maps_unset_values_to_auto():
    config = DistributedConfig.from_section(base_config().parallel)
    assert config == DistributedConfig()
    assert config.initialize_kwargs() == {
        "coordinator_address": None, "num_processes": None, "process_id": None,
        "initialization_timeout": 300,
    }  # fmt: skip
    assert not initialize(config)  # disabled: nothing to do
    assert any_process(True) and not any_process(False)  # one process: its own flag


def test_loopback_coordinator_binds_to_loopback_only():
    kwargs = DistributedConfig(True, "127.0.0.1:1234", 2, 1).initialize_kwargs()
    assert kwargs["coordinator_bind_address"] == "127.0.0.1:1234"
    assert (kwargs["num_processes"], kwargs["process_id"]) == (2, 1)
    remote = DistributedConfig(True, "10.0.0.1:1234", 2, 0).initialize_kwargs()
    assert "coordinator_bind_address" not in remote  # JAX's default: all interfaces


@pytest.mark.parametrize(
    "address,expected",
    [("127.0.0.1:80", True), ("localhost:5", True), ("[::1]:8476", True),
     ("10.1.2.3:80", False), ("tpu-worker-0:8476", False), ("", False)],
)  # fmt: skip
def test_is_loopback(address, expected):
    assert is_loopback(address) == expected


@pytest.mark.parametrize(
    "num_processes,process_id,match",
    [(-1, 0, "must be >= 0"), (2, -2, "must be >= 0"), (2, 2, "must be below")],
)
def test_bad_process_settings_raise(num_processes, process_id, match):
    with pytest.raises(ValueError, match=match):
        DistributedConfig(True, "", num_processes, process_id).initialize_kwargs()
