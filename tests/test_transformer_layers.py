"""Tests for s2s_jax.models.transformer_layers and the decoding cache of step_cache."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.step_cache import StepCache, empty_cache
from s2s_jax.models.transformer_config import TransformerConfig
from s2s_jax.models.transformer_layers import (
    ACTIVATIONS,
    NEG_INF,
    CrossAttention,
    DecoderLayer,
    EncoderLayer,
    Mlp,
    SelfAttention,
    attention_weights,
    fused_split_heads,
    make_norm,
    split_heads,
    stack_layer_params,
    unstack_layer_params,
)

# float32 on CPU; the compared computations differ only in summation order.
TOL = 1e-5


def _config(**overrides) -> TransformerConfig:
    fields = dict(vocab_size=20, d_model=16, num_heads=2, mlp_dim=24)
    return TransformerConfig(**{**fields, "dropout": 0.0, **overrides})


def test_attention_weights_hand_example():
    # One head, head_dim 1 (scale 1): logits are q * k; the third key is masked.
    query = jnp.array([1.0, 0.0]).reshape(1, 2, 1, 1)
    key = jnp.array([0.0, jnp.log(3.0), 5.0]).reshape(1, 3, 1, 1)
    bias = jnp.array([0.0, 0.0, NEG_INF]).reshape(1, 1, 1, 3)
    weights = attention_weights(query, key, bias)
    assert weights.shape == (1, 1, 2, 3) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights[0, 0, 0], [0.25, 0.75, 0.0], atol=TOL)
    np.testing.assert_allclose(weights[0, 0, 1], [0.5, 0.5, 0.0], atol=TOL)


def test_fully_masked_row_is_finite():
    query = jnp.ones((1, 1, 2, 4))
    key = jnp.ones((1, 3, 2, 4))
    weights = attention_weights(query, key, jnp.full((1, 1, 1, 3), NEG_INF))
    assert bool(jnp.all(jnp.isfinite(weights)))
    np.testing.assert_allclose(weights, jnp.full((1, 2, 1, 3), 1 / 3), atol=TOL)


def test_fused_split_heads_matches_separate_projections_params_included():
    cfg = _config()
    x = jax.random.normal(jax.random.key(0), (2, 3, 16))
    names = ("query", "key", "value")

    class Separate(nn.Module):
        @nn.compact
        def __call__(self, x):
            return [split_heads(cfg, name)(x) for name in names]

    class Fused(nn.Module):
        @nn.compact
        def __call__(self, x):
            return fused_split_heads(cfg, x, names)

    separate = Separate().init(jax.random.key(1), x)
    fused = Fused().init(jax.random.key(1), x)
    # Same tree, shapes, initial values and logical axes: checkpoints and shardings carry over.
    chex.assert_trees_all_equal(nn.unbox(fused), nn.unbox(separate))
    axes = lambda tree: jax.tree.map(lambda p: p.names, tree, is_leaf=nn.meta.is_axis_metadata)
    assert axes(fused) == axes(separate)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), separate)
    for got, want in zip(Fused().apply(params, x), Separate().apply(params, x), strict=True):
        assert got.shape == (2, 3, 2, 8)
        np.testing.assert_allclose(got, want, atol=TOL)


def test_step_cache_writes_each_hypothesis_position_and_row():
    cache = empty_cache(batch=1, heads=1, head_dim=1, max_length=4, dtype=jnp.float32)
    cache = cache.tile_beams(2)
    assert isinstance(cache, StepCache) and cache.keys.shape == (1, 1, 1, 2, 4)
    new = jnp.array([7.0, 9.0]).reshape(1, 2, 1, 1)
    out = cache.write(new, -new, jnp.array([[1, 3]]))
    np.testing.assert_array_equal(out.keys[0, 0, 0], [[0, 7, 0, 0], [0, 0, 0, 9]])
    np.testing.assert_array_equal(out.values[0, 0, :, :, 0], [[0, -7, 0, 0], [0, 0, 0, -9]])
    np.testing.assert_array_equal(out.rows[0], [[0, 0, 0, 0], [0, 0, 0, 1]])
    past_the_end = cache.write(new, new, jnp.array([[4, 0]]))  # slot 4 does not exist
    np.testing.assert_array_equal(past_the_end.keys[0, 0, 0], [[0, 0, 0, 0], [9, 0, 0, 0]])
    np.testing.assert_array_equal(past_the_end.rows[0], [[0, 0, 0, 0], [1, 0, 0, 0]])


def test_step_cache_follows_reordered_hypotheses_without_moving_buffers():
    # Reference: every hypothesis keeps its own copy of its history, gathered on each reorder.
    batch, beam, heads, head_dim, slots = 2, 3, 2, 4, 5
    rng = np.random.default_rng(0)
    cache = empty_cache(batch, heads, head_dim, slots, jnp.float32).tile_beams(beam)
    ref_keys = np.zeros((batch, beam, slots, heads, head_dim), np.float32)
    ref_values = np.zeros_like(ref_keys)
    for t in range(slots):
        key, value, query = rng.normal(size=(3, batch, beam, heads, head_dim)).astype(np.float32)
        written = cache.write(key, value, jnp.full((batch, beam), t))
        ref_keys[:, :, t], ref_values[:, :, t] = key, value
        bias = jnp.where(jnp.arange(slots) <= t, 0.0, NEG_INF)[None, None, None, :]
        out = written.attend(jnp.asarray(query), bias)
        for i in range(beam):
            weights = attention_weights(query[:, i : i + 1], ref_keys[:, i], bias)
            expected = jnp.einsum("bhqk,bkhd->bqhd", weights, ref_values[:, i])[:, 0]
            np.testing.assert_allclose(out[:, i], expected, atol=TOL)
        parents = rng.integers(0, beam, size=(batch, beam))
        cache = written.reorder_beams(jnp.asarray(parents))
        np.testing.assert_array_equal(cache.keys, written.keys)  # only the row table moved
        ref_keys = np.take_along_axis(ref_keys, parents[:, :, None, None, None], axis=1)
        ref_values = np.take_along_axis(ref_values, parents[:, :, None, None, None], axis=1)


@pytest.mark.parametrize(
    "norm, expected",
    [
        # (x - 2.5) / sqrt(1.25): mean 2.5, variance 1.25.
        ("layernorm", [-1.3416408, -0.4472136, 0.4472136, 1.3416408]),
        # x / sqrt(7.5): mean square (1 + 4 + 9 + 16) / 4 = 7.5.
        ("rmsnorm", [0.3651484, 0.7302967, 1.0954451, 1.4605935]),
    ],
)
def test_norm_hand_example(norm, expected):
    module = make_norm(_config(norm=norm, d_model=4, num_heads=1))
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_allclose(module.apply(variables, x)[0], expected, atol=TOL)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_param_shapes(activation):
    cfg = _config(activation=activation)
    x = jnp.ones((2, 3, 16))
    variables = nn.meta.unbox(Mlp(cfg).init(jax.random.key(0), x, True))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    expected_inputs = ["wi_0", "wi_1"] if ACTIVATIONS[activation].gated else ["wi"]
    assert sorted(shapes) == sorted([*expected_inputs, "wo"])
    for name in expected_inputs:
        assert shapes[name] == {"kernel": (16, 24), "bias": (24,)}
    assert shapes["wo"] == {"kernel": (24, 16), "bias": (16,)}
    assert Mlp(cfg).apply(variables, x, True).shape == (2, 3, 16)


def test_glu_multiplies_gate_and_linear_branch():
    cfg = _config(activation="reglu")
    x = jax.random.normal(jax.random.key(1), (1, 2, 16))
    params = nn.meta.unbox(Mlp(cfg).init(jax.random.key(0), x, True))["params"]
    dense = lambda p, h: h @ p["kernel"] + p["bias"]
    hidden = jax.nn.relu(dense(params["wi_0"], x)) * dense(params["wi_1"], x)
    expected = dense(params["wo"], hidden)
    np.testing.assert_allclose(Mlp(cfg).apply({"params": params}, x, True), expected, atol=TOL)


def test_self_attention_cache_step_matches_full_causal():
    cfg = _config(position="rope")
    x = jax.random.normal(jax.random.key(0), (2, 4, 16))
    positions = jnp.arange(4)[None]
    causal = jnp.where(positions[:, None, None, :] <= positions[:, None, :, None], 0.0, NEG_INF)
    module = SelfAttention(cfg)
    variables = module.init(jax.random.key(1), x, positions, causal, None, True)
    full, _ = module.apply(variables, x, positions, causal, None, True)
    cache = empty_cache(batch=2, heads=2, head_dim=8, max_length=4, dtype=jnp.float32)
    for t in range(4):
        index = jnp.full((2, 1), t)
        bias = jnp.where(jnp.arange(4) <= t, 0.0, NEG_INF)[None, None, None, :]
        out, cache = module.apply(variables, x[:, t : t + 1], index, bias, cache, True)
        np.testing.assert_allclose(out[:, 0], full[:, t], atol=TOL)


def test_cross_attention_weights_skip_padding():
    cfg = _config()
    x = jax.random.normal(jax.random.key(0), (2, 3, 16))
    keys = jax.random.normal(jax.random.key(1), (2, 5, 2, 8))
    mask = jnp.array([[True] * 5, [True, True, False, False, False]])
    bias = jnp.where(mask, 0.0, NEG_INF)[:, None, None, :]
    module = CrossAttention(cfg)
    variables = module.init(jax.random.key(2), x, keys, keys, bias, True)
    out, weights = module.apply(variables, x, keys, keys, bias, True)
    assert out.shape == (2, 3, 16) and weights.shape == (2, 3, 5)
    np.testing.assert_allclose(weights.sum(-1), jnp.ones((2, 3)), atol=TOL)
    np.testing.assert_array_equal(weights[1, :, 2:], jnp.zeros((3, 3)))


def _encoder_layer(cfg, x):
    bias = jnp.zeros((1, 1, 1, x.shape[1]))
    positions = jnp.arange(x.shape[1])[None]
    layer = EncoderLayer(cfg)
    variables = layer.init(jax.random.key(0), x, True, bias, positions)
    return lambda det, rng=None: layer.apply(
        variables, x, det, bias, positions, rngs=None if rng is None else {"dropout": rng}
    )[0]


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_post_norm_output_is_normalised(norm):
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(3), (2, 5, 16))
    post = _encoder_layer(_config(pre_norm=False, norm=norm), x)(True)
    # Freshly initialised norms have scale 1 and bias 0: the post-LN output is the norm itself.
    rms = jnp.sqrt(jnp.mean(post**2, axis=-1))
    if norm == "layernorm":
        np.testing.assert_allclose(post.mean(-1), jnp.zeros((2, 5)), atol=1e-4)
    np.testing.assert_allclose(rms, jnp.ones((2, 5)), atol=1e-4)  # eps 1e-6 vs variance ~1
    pre = _encoder_layer(_config(pre_norm=True, norm=norm), x)(True)
    assert float(jnp.abs(pre.mean(-1)).max()) > 1.0  # pre-LN keeps the residual stream's mean


def test_dropout_only_when_not_deterministic():
    x = jax.random.normal(jax.random.key(3), (2, 5, 16))
    run = _encoder_layer(_config(dropout=0.3, attention_dropout=0.2, activation_dropout=0.2), x)
    np.testing.assert_array_equal(run(True), run(True, jax.random.key(5)))
    a, b = run(False, jax.random.key(5)), run(False, jax.random.key(6))
    assert float(jnp.abs(a - b).max()) > 1e-2
    np.testing.assert_array_equal(a, run(False, jax.random.key(5)))


def test_decoder_layer_param_names_and_axes():
    cfg = _config()
    x = jnp.ones((2, 3, 16))
    kv = jnp.ones((2, 4, 2, 8))
    args = (True, jnp.zeros((1, 1, 3, 3)), jnp.arange(3)[None], (kv, kv), jnp.zeros((2, 1, 1, 4)))
    boxed = DecoderLayer(cfg).init(jax.random.key(0), x, *args, None)["params"]
    assert sorted(boxed) == [
        "cross_attention",
        "cross_attention_norm",
        "mlp",
        "mlp_norm",
        "self_attention",
        "self_attention_norm",
    ]
    assert sorted(boxed["cross_attention"]) == ["out", "query"]  # keys/values live on the stack
    assert boxed["self_attention"]["query"]["kernel"].names == ("embed", "heads", "kv")
    assert boxed["self_attention"]["out"]["kernel"].names == ("heads", "kv", "embed")
    assert boxed["mlp"]["wi"]["kernel"].names == ("embed", "mlp")
    assert boxed["mlp_norm"]["scale"].names == ("embed",)


def test_layer_param_layout_conversion():
    unrolled = {
        "encoder": {
            "layers_0": {"w": jnp.array([1.0, 2.0])},
            "layers_1": {"w": jnp.array([3.0, 4.0])},
            "final_norm": {"scale": jnp.ones(2)},
        },
        "embedding": jnp.zeros(3),
    }
    scanned = stack_layer_params(unrolled)
    assert sorted(scanned["encoder"]) == ["final_norm", "layers"]
    np.testing.assert_array_equal(scanned["encoder"]["layers"]["w"], [[1.0, 2.0], [3.0, 4.0]])
    back = unstack_layer_params(scanned)
    assert jax.tree.structure(back) == jax.tree.structure(unrolled)
    jax.tree.map(np.testing.assert_array_equal, back, unrolled)


def test_layer_param_conversion_rejects_gaps():
    with pytest.raises(ValueError, match="layers_0..layers_N"):
        stack_layer_params({"layers_0": {"w": jnp.ones(1)}, "layers_2": {"w": jnp.ones(1)}})
