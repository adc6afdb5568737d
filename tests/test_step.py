"""The train step: gradient accumulation equals one big batch; any mesh equals one device."""

import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest

from s2s_jax.config import apply_overrides, load_experiment
from s2s_jax.parallel import sharding
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.run.components import build
from s2s_jax.training.step import eval_step, jit_train_step, split_micro_batches

NUM_STEPS = 3
# Sizes divisible by 8 on every sharded axis: embed 16/32, RNN gates 128, heads 8, MLP 64.
MODELS = {
    "rnn": ("experiments/reverse_attention.py", {}),
    "transformer": (
        "experiments/reverse_transformer.py",
        {
            f"model.{side}.{key}": value
            for side in ("encoder", "decoder")
            for key, value in (("d_model", "32"), ("num_heads", "8"), ("mlp_dim", "64"))
        },
    ),
}
MESHES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (1, 1, 8), "2d": (4, 1, 2)}
# A kernel with an "embed" (fsdp) and an "mlp"/"heads" (tensor) axis, and its full shape.
PROBE = {
    "rnn": (("encoder", "stack", "layer_0", "input_proj", "kernel"), (16, 128)),
    "transformer": (("encoder", "layers", "self_attention", "query", "kernel"), (1, 32, 8, 4)),
}


def tiny_config(model, **overrides):
    path, base = MODELS[model]
    # One bucket: every batch has the same shape, so each run compiles its step once.
    overrides = {**base, "data.buckets": "(8,)", **overrides}
    return apply_overrides(load_experiment(path, "tiny"), list(overrides.items()))


def components(config, mesh_shape=None):
    mesh = make_mesh(MeshConfig(*mesh_shape)) if mesh_shape else None
    c = build(config, mesh=mesh)
    # SGD with momentum: its update is linear in the gradient, so a gradient of the wrong scale
    # shows in the parameters (Adam's normalised update would hide it), and float noise in
    # gradients that are exactly zero in theory (e.g. key biases) is not amplified to +-lr.
    return dataclasses.replace(c, tx=optax.sgd(0.5, momentum=0.9))


def train(config, mesh_shape=None, steps=NUM_STEPS):
    """Runs ``steps`` updates; returns (per-step metrics, final state, jitted step)."""
    c = components(config, mesh_shape)
    step_fn = jit_train_step(
        c.model, c.tx, c.schedule,
        grad_accum_steps=config.parallel.grad_accum_steps,
        shardings=c.shardings if mesh_shape else None,
    )  # fmt: skip
    state, (_, rng), history = c.init_state(), c.rngs(), []
    for _ in range(steps):
        batch = next(c.data.train)
        if mesh_shape:
            batch = sharding.shard_batch(batch, c.shardings.batch, config.data.batch_size)
        state, metrics = step_fn(state, batch, rng)
        history.append(jax.device_get(metrics))
    return history, state, step_fn


@functools.cache
def reference(model):
    history, state, _ = train(tiny_config(model))
    return history, jax.device_get(state.params)


def assert_same_run(history, params, ref_history, ref_params):
    # float32 sums over ~100 tokens, reordered across devices or micro-batches, differ by
    # ~1e-7 relative; three linear SGD steps keep that near 1e-6. 1e-5 leaves margin and is
    # still far below the parameter change of one step (asserted > 1e-3 below).
    for got, want in zip(history, ref_history, strict=True):
        for key in ("loss", "grad_norm", "tokens", "accuracy"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_training_changes_params_beyond_tolerance(model):
    # Guards the equivalence tests against passing vacuously.
    config = tiny_config(model)
    initial = jax.device_get(components(config).init_state().params)
    _, params = reference(model)
    change = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(initial), strict=True)
    )
    assert change > 1e-3


def test_grad_accumulation_equals_one_big_batch():
    history, state, _ = train(tiny_config("rnn", **{"parallel.grad_accum_steps": "4"}))
    assert_same_run(history, jax.device_get(state.params), *reference("rnn"))


def test_accumulated_loss_is_token_weighted():
    config = tiny_config("rnn", **{"parallel.grad_accum_steps": "4"})
    c = components(config)
    batch = next(c.data.train)
    micro = split_micro_batches(batch, 4)
    tokens = [(np.asarray(m) != 0).sum() for m in micro["targets"]]
    assert len(set(tokens)) > 1  # micro-batches differ, so a mean of means would differ
    state = c.init_state()
    sums = jax.jit(functools.partial(eval_step, model=c.model))(state.params, batch)
    step_fn = jit_train_step(c.model, c.tx, c.schedule, grad_accum_steps=4)
    _, metrics = step_fn(state, batch, c.rngs()[1])
    # Same float32 logits (no dropout); only the summation order differs.
    np.testing.assert_allclose(metrics["loss"], sums["loss_sum"] / sums["tokens"], rtol=1e-6)
    assert float(metrics["tokens"]) == sum(tokens)


def test_micro_batches_take_strided_rows():
    batch = {"targets": np.arange(8 * 3).reshape(8, 3)}
    micro = split_micro_batches(batch, 2)["targets"]
    np.testing.assert_array_equal(micro[0][:, 0], [0, 6, 12, 18])
    np.testing.assert_array_equal(micro[1][:, 0], [3, 9, 15, 21])


def test_grad_accum_must_divide_the_batch():
    c = components(tiny_config("rnn"))
    step_fn = jit_train_step(c.model, c.tx, c.schedule, grad_accum_steps=3)
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        step_fn(c.init_state(), next(c.data.train), c.rngs()[1])


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_sharded_training_matches_one_device(model, mesh):
    mesh_shape = MESHES[mesh]
    history, state, step_fn = train(tiny_config(model), mesh_shape)
    assert step_fn._cache_size() == 1  # one compile for all steps: shardings are stable
    assert_same_run(history, state.params, *reference(model))
    path, full = PROBE[model]
    kernel = functools.reduce(lambda tree, key: tree[key], path, state.params)
    fsdp, tensor = mesh_shape[1], mesh_shape[2]
    # "embed" is split over fsdp, "mlp"/"heads" over tensor (the dims after the first two).
    embed_dim, split_dim = (0, 1) if model == "rnn" else (1, 2)
    expected = list(full)
    expected[embed_dim] //= fsdp
    expected[split_dim] //= tensor
    assert kernel.addressable_shards[0].data.shape == tuple(expected)
    # The optimizer state (momentum) is laid out like its parameter.
    trace = functools.reduce(lambda tree, key: tree[key], path, state.opt_state[0].trace)
    assert trace.sharding == kernel.sharding


def test_multihead_attention_rnn_on_a_2d_mesh():
    # Multi-head attention's DenseGeneral kernels [embed, heads, kv] split heads over tensor.
    config = tiny_config("rnn", **{"model.decoder.attention": "multihead"})
    ref_history, ref_state, _ = train(config)
    history, state, _ = train(config, MESHES["2d"])
    assert_same_run(history, state.params, ref_history, jax.device_get(ref_state.params))


@pytest.mark.parametrize(
    "experiment",
    ["experiments/reverse_transformer_lstm.py", "experiments/reverse_lstm_transformer.py"],
)
def test_mixed_pairs_on_a_2d_mesh_match_one_device(experiment):
    # A Transformer encoder under an LSTM decoder and the reverse: their params carry logical
    # axis names like any pair's, so the mesh changes nothing but the layout.
    overrides = [("data.buckets", "(8,)")]
    config = apply_overrides(load_experiment(experiment, "tiny"), overrides)
    ref_history, ref_state, _ = train(config)
    history, state, _ = train(config, MESHES["2d"])
    assert_same_run(history, state.params, ref_history, jax.device_get(ref_state.params))


def test_sharded_grad_accumulation_matches_one_device():
    config = tiny_config("rnn", **{"parallel.grad_accum_steps": "2"})
    history, state, _ = train(config, (4, 1, 2))
    assert_same_run(history, state.params, *reference("rnn"))


@pytest.mark.xfail(
    strict=True,
    reason="XLA (jaxlib 0.10.2, CPU) miscompiles the backward pass of the RNN's attention "
    "into encoder outputs on a 2x2x2 mesh when a device holds <= 2 rows: encoder gradients are "
    "off by ~5% (GSPMD and Shardy alike; 16 rows or a (4, 1, 2) mesh are exact). Strict: when a "
    "jaxlib upgrade fixes it, this fails and the 2-D tests can move back to (2, 2, 2).",
)
def test_known_xla_bug_on_2x2x2_mesh_with_two_rows_per_device():
    config = tiny_config("rnn", **{"parallel.grad_accum_steps": "2"})
    history, state, _ = train(config, (2, 2, 2))
    assert_same_run(history, state.params, *reference("rnn"))
