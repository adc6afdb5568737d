"""Tests for s2s_jax.run.profile: synthetic benchmark batches and `s2s profile` end to end."""

import json

import jax
import numpy as np
import pytest

from s2s_jax.config import load_train_config
from s2s_jax.data.vocab import EOS_ID, PAD_ID, UNK_ID
from s2s_jax.profiling import count_flops, measure_matmul_flops
from s2s_jax.run.profile import (
    RESULT_FILE,
    benchmark_batches,
    build_for_profile,
    main,
    profile_experiment,
)
from s2s_jax.training.step import jit_train_step

W1 = "experiments/bench_w1_lstm.py"
W2 = "experiments/bench_w2_transformer.py"


@pytest.fixture(scope="module")
def ceiling() -> float:
    # A small measured matmul ceiling keeps the tests fast; the default 2048^3 one takes seconds.
    return measure_matmul_flops(256, 5)


def _check_sane(result: dict) -> None:
    assert result["compile_seconds"] > 0
    assert result["step_seconds"] > 0
    assert result["step_seconds_min"] <= result["step_seconds"] <= result["step_seconds_max"]
    assert result["flops_per_step"] > 0
    assert 0 < result["mfu"] < 1
    assert result["tokens_per_sec"] == pytest.approx(
        result["tokens_per_step"] / result["step_seconds"], rel=1e-12
    )
    assert result["achieved_flops_per_sec"] == pytest.approx(
        result["flops_per_step"] / result["step_seconds"], rel=1e-12
    )
    assert result["memory"]["total_bytes"] > result["memory"]["temp_bytes"] > 0


def test_benchmark_batches_are_fixed_shape_random_tokens():
    config = load_train_config(W1 + ":tiny", [])
    first, second = [next(benchmark_batches(config, 50, 12)) for _ in range(2)]
    batches = benchmark_batches(config, 50, 12)
    one, two = next(batches), next(batches)
    for key in ("inputs", "targets"):
        ids = one[key]
        assert ids.shape == (config.data.batch_size, 12) and ids.dtype == np.int32
        assert np.all(ids[:, -1] == EOS_ID)
        assert ids[:, :-1].min() > UNK_ID and ids[:, :-1].max() < 50
        assert not np.any(ids == PAD_ID)
        np.testing.assert_array_equal(first[key], second[key])  # same seed, same stream
    assert not np.array_equal(one["inputs"], two["inputs"])


@pytest.mark.parametrize("vocab,length", [(4, 8), (100, 0)])
def test_benchmark_batches_reject_bad_sizes(vocab, length):
    config = load_train_config(W1 + ":tiny", [])
    with pytest.raises(ValueError, match="Synthetic batches need"):
        next(benchmark_batches(config, vocab, length))


def test_profile_w2_tiny_with_trace_and_hlo(tmp_path, ceiling):
    overrides = ["--config.profile.trace_steps=(2,4)", "--config.profile.dump_hlo=true"]
    config = load_train_config(W2 + ":tiny", overrides)
    config.unlock()
    config.profile.peak_flops = ceiling
    result = profile_experiment(config, tmp_path, steps=4, warmup=1, vocab_size=40)
    _check_sane(result)
    assert result["batch_shape"] == {"inputs": [8, 8], "targets": [8, 8], "inputs_mask": [8, 8]}
    assert result["tokens_per_step"] == 8 * 8  # synthetic rows have no padding
    assert result["data"] == "synthetic: vocab 40, length 8"
    assert result["peak_source"] == "config profile.peak_flops"
    assert result["peak_flops_per_sec"] == ceiling
    # The layer stacks are scanned: XLA counts their bodies once, count_flops all layers.
    assert result["flops_per_step"] > 1.3 * result["xla_flops_per_step"]
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == result
    assert "HloModule" in (tmp_path / "train_step.hlo.txt").read_text()
    assert any(f.endswith(".xplane.pb") for f in result["trace_files"])


def test_main_profiles_task_data(tmp_path, ceiling, capsys):
    argv = ["--config", "experiments/reverse_attention.py:tiny", "--workdir", str(tmp_path)]
    argv += ["--steps", "3", "--warmup", "1", f"--config.profile.peak_flops={ceiling}"]
    assert main(argv) == 0
    result = json.loads((tmp_path / RESULT_FILE).read_text())
    _check_sane(result)
    assert result["data"] == "task 'reverse'"
    rows, width = result["batch_shape"]["targets"]
    assert 0 < result["tokens_per_step"] < rows * width  # bucketed rows carry padding
    # The LSTMs scan over time; XLA counts one time step of each scan.
    assert result["flops_per_step"] > 2 * result["xla_flops_per_step"]
    assert result["trace_files"] == []
    out = capsys.readouterr().out
    assert "MFU" in out and str(tmp_path / RESULT_FILE) in out
    if jax.default_backend() == "cpu":
        assert "device peak not reported" in out


def _w1_forward_matmul_flops(b=64, s=32, t=32, e=256, h=512, v=8000):
    lstm_stack = 2 * b * s * (e + h) * 4 * h + 2 * b * s * (h + h) * 4 * h  # input + recurrent
    attention = 2 * b * s * h * h + 2 * (2 * b * t * s * h)  # key projection; scores, context
    return 2 * lstm_stack + attention + 2 * b * t * 2 * h * h + 2 * b * t * h * v


def _w2_forward_matmul_flops(b=64, n=32, d=256, f=1024, v=8000, layers=3):
    tokens, attention = b * n, 2 * (2 * b * n * n * d)  # scores and context of one attention
    encoder = layers * (2 * tokens * (4 * d * d + 2 * d * f) + attention)
    decoder = layers * (2 * tokens * (8 * d * d + 2 * d * f) + 2 * attention)
    return encoder + decoder + 2 * tokens * d * v  # tied output projection


@pytest.mark.parametrize(
    "spec,forward",
    [
        (W1, _w1_forward_matmul_flops()),
        (W2, _w2_forward_matmul_flops()),
        (W2 + ":preln", _w2_forward_matmul_flops()),
    ],
)
def test_bench_step_flops_match_the_workload_sizes(spec, forward):
    config = load_train_config(spec, [])
    c, batches, _ = build_for_profile(config, 1, vocab_size=8000)
    assert batches[0]["inputs"].shape == batches[0]["targets"].shape == (64, 32)
    step = jit_train_step(c.model, c.tx, c.schedule)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batches[0])
    flops = count_flops(step, c.abstract_state(), shapes, c.rngs()[1])  # traced, not compiled
    # Backward matmuls cost twice the forward ones. Elementwise work, softmaxes, layer norms and
    # the Adam update add under 1% at these sizes: 2% checks the model sizes and the counter.
    assert flops == pytest.approx(3 * forward, rel=0.02)


def test_profile_rejects_bad_step_counts(tmp_path):
    config = load_train_config(W1 + ":tiny", [])
    with pytest.raises(ValueError, match="steps >= 1"):
        profile_experiment(config, tmp_path, steps=0)
