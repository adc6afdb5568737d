import json

import numpy as np

from s2s_jax.run.metrics_writer import MetricWriter, read_metrics
from s2s_jax.run.run_info import git_revision, package_versions, write_run_info


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write(10, "train", {"loss": np.float32(1.5), "accuracy": 0.25})
        writer.write(20, "eval", {"exact_match": 0.75})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 10, "split": "train", "loss": 1.5, "accuracy": 0.25},
        {"step": 20, "split": "eval", "exact_match": 0.75},
    ]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_run_info(tmp_path):
    write_run_info(tmp_path, {"seed": 3, "model": {"hidden_size": 8}})
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden_size"] == 8
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["seed"] == 3
    assert info["packages"]["jax"] == package_versions()["jax"] != "not installed"
    assert info["git_revision"] == git_revision()
