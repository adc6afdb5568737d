"""Tests for s2s_jax.models.rnn_attention: masked softmax and the attention mechanisms."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models import rnn_attention as attention

# Every comparison is a handful of float32 exps and dot products of size <= 8 computed two ways
# (XLA vs. numpy/hand), so they agree to a few ulps (~1e-7); 1e-6 is a margin above that.
TOL = 1e-6
E = math.e


def _attend(module, query, values, mask):
    return module(query, module.prepare(values, mask))


def _init(module, query, values, mask):
    """Random normal parameters shaped like the module's (any values suit these tests)."""
    variables = jax.eval_shape(
        lambda: module.init(jax.random.key(0), query, values, mask, method=_attend)
    )
    shapes = nn.meta.unbox(variables).get("params", {})
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, params, query, values, mask):
    return module.apply({"params": params}, query, values, mask, method=_attend)


def test_masked_softmax_hand_values():
    scores = jnp.array([[[1.0, 2.0, 3.0]]])
    mask = jnp.array([[True, True, False]])
    weights = attention.masked_softmax(scores, mask)
    np.testing.assert_allclose(weights, [[[1 / (1 + E), E / (1 + E), 0.0]]], atol=TOL)
    assert weights[0, 0, 2] == 0.0  # exactly zero, not just small


def test_masked_softmax_fully_padded_row_is_zero_not_nan():
    weights = attention.masked_softmax(jnp.ones((2, 1, 3)), jnp.array([[False] * 3, [True] * 3]))
    np.testing.assert_array_equal(weights[0], 0.0)
    np.testing.assert_allclose(weights[1], 1 / 3, atol=TOL)


def test_masked_softmax_broadcasts_over_heads():
    scores = jnp.zeros((1, 2, 3, 4))  # [batch, beam, heads, src]
    weights = attention.masked_softmax(scores, jnp.array([[True, True, False, False]]))
    np.testing.assert_allclose(weights[..., :2], 0.5, atol=TOL)
    np.testing.assert_array_equal(weights[..., 2:], 0.0)


def test_luong_dot_hand_example_ignores_pad_equal_to_query():
    # The PAD key equals the query, so it would win if the mask were ignored.
    values = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    mask = jnp.array([[True, True, False]])
    query = jnp.array([[[1.0, 0.0]]])
    module = attention.DotAttention(2)
    context, weights = _apply(module, {}, query, values, mask)
    np.testing.assert_allclose(weights, [[[E / (E + 1), 1 / (E + 1), 0.0]]], atol=TOL)
    np.testing.assert_allclose(context, [[[E / (E + 1), 1 / (E + 1)]]], atol=TOL)


def test_luong_dot_query_identical_to_one_key_selects_it():
    keys = 10.0 * jnp.eye(3)[None]  # scores 100 for the matching key, 0 for the others
    context, weights = _apply(attention.DotAttention(3), {}, keys, keys, jnp.ones((1, 3), bool))
    np.testing.assert_allclose(weights[0], np.eye(3), atol=TOL)  # e^-100 underflows
    np.testing.assert_allclose(context[0], keys[0], atol=1e-5)


def test_luong_dot_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="luong_general"):
        query, values = jnp.ones((1, 1, 2)), jnp.ones((1, 3, 4))
        _apply(attention.DotAttention(2), {}, query, values, jnp.ones((1, 3), bool))


def test_luong_general_hand_example():
    values = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    mask = jnp.ones((1, 2), bool)
    query = jnp.array([[[1.0, 0.0]]])
    module = attention.GeneralAttention(2)
    params = {"key_proj": {"kernel": 2.0 * jnp.eye(2)}}  # scores h . (2 k) = [2, 0]
    context, weights = _apply(module, params, query, values, mask)
    np.testing.assert_allclose(weights, [[[E**2 / (E**2 + 1), 1 / (E**2 + 1)]]], atol=TOL)
    np.testing.assert_allclose(context, weights, atol=TOL)  # values are the identity


def test_additive_hand_example():
    values = jnp.array([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]]])
    mask = jnp.array([[True, True, True, False]])
    query = jnp.array([[[0.5, -0.5]]])
    module = attention.AdditiveAttention(2)
    params = {
        "query_proj": {"kernel": jnp.eye(2)},
        "key_proj": {"kernel": jnp.eye(2), "bias": jnp.array([0.0, 0.1])},
        "score_vector": jnp.array([1.0, 2.0]),
    }
    context, weights = _apply(module, params, query, values, mask)
    # score_j = 1 * tanh(0.5 + k_j0) + 2 * tanh(-0.5 + k_j1 + 0.1)
    scores = np.tanh([1.5, 0.5, 2.5]) + 2 * np.tanh([-0.4, 0.6, 1.6])
    expected = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(weights[0, 0], [*expected, 0.0], atol=TOL)
    np.testing.assert_allclose(context[0, 0], expected @ np.asarray(values[0, :3]), atol=TOL)


def _multihead_reference(params, query, values, mask, heads):
    """Per-head numpy loop: softmax(q_h k_h^T / sqrt(d)) v_h, concatenated, projected."""
    q = np.einsum("bkf,fhd->bkhd", query, params["query_proj"]["kernel"])
    k = np.einsum("bsf,fhd->bshd", values, params["key_proj"]["kernel"])
    v = np.einsum("bsf,fhd->bshd", values, params["value_proj"]["kernel"])
    contexts, all_weights = [], []
    for h in range(heads):
        scores = q[:, :, h] @ k[:, :, h].transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.where(mask[:, None, :], scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        all_weights.append(w)
        contexts.append(w @ v[:, :, h])
    context = np.einsum("bkhd,hdo->bko", np.stack(contexts, 2), params["out_proj"]["kernel"])
    return context, np.mean(all_weights, axis=0)


def test_multihead_matches_per_head_reference():
    values = jax.random.normal(jax.random.key(1), (2, 5, 6))
    mask = jnp.array([[True] * 3 + [False] * 2, [True] * 5])
    query = jax.random.normal(jax.random.key(2), (2, 3, 4))
    module = attention.MultiHeadAttention(4, num_heads=2)
    params = _init(module, query, values, mask)
    assert params["query_proj"]["kernel"].shape == (4, 2, 2)
    context, weights = _apply(module, params, query, values, mask)
    ref_context, ref_weights = _multihead_reference(
        jax.tree.map(np.asarray, params), *map(np.asarray, (query, values, mask)), heads=2
    )
    np.testing.assert_allclose(weights, ref_weights, atol=TOL)
    np.testing.assert_allclose(context, ref_context, atol=1e-5)  # 3 chained projections


def test_multihead_rejects_indivisible_heads():
    module = attention.MultiHeadAttention(5, num_heads=2)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        _init(module, jnp.ones((1, 1, 5)), jnp.ones((1, 2, 5)), jnp.ones((1, 2), bool))


MECHANISMS = {
    "luong_dot": lambda: attention.DotAttention(4),
    "luong_general": lambda: attention.GeneralAttention(4),
    "additive": lambda: attention.AdditiveAttention(4),
    "multihead": lambda: attention.MultiHeadAttention(4, num_heads=2),
}


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_weights_are_a_distribution_over_real_positions(name):
    values = jax.random.normal(jax.random.key(3), (3, 6, 4))
    mask = jnp.array([[True] * 2 + [False] * 4, [True] * 6, [False] * 6])
    query = 3.0 * jax.random.normal(jax.random.key(4), (3, 2, 4))
    module = MECHANISMS[name]()
    context, weights = _apply(module, _init(module, query, values, mask), query, values, mask)
    assert weights.shape == (3, 2, 6) and weights.dtype == jnp.float32
    assert context.shape == (3, 2, 4)
    assert bool(jnp.all(weights >= 0.0))
    np.testing.assert_allclose(weights[:2].sum(-1), 1.0, atol=TOL)
    np.testing.assert_array_equal(weights[0, :, 2:], 0.0)
    np.testing.assert_array_equal(weights[2], 0.0)  # fully padded source: zeros, no NaN
    assert bool(jnp.all(jnp.isfinite(context)))


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_beam_queries_broadcast_against_untiled_memory(name):
    values = jax.random.normal(jax.random.key(5), (2, 5, 4))
    mask = jnp.array([[True] * 4 + [False], [True] * 5])
    query = jax.random.normal(jax.random.key(6), (2, 3, 4))  # 3 beams
    module = MECHANISMS[name]()
    params = _init(module, query, values, mask)
    context, weights = _apply(module, params, query, values, mask)
    for beam in range(3):
        single = _apply(module, params, query[:, beam : beam + 1], values, mask)
        np.testing.assert_allclose(context[:, beam : beam + 1], single[0], atol=TOL)
        np.testing.assert_allclose(weights[:, beam : beam + 1], single[1], atol=TOL)


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_prepared_memory_is_per_batch_not_per_beam(name):
    values = jnp.ones((2, 5, 4))
    module = MECHANISMS[name]()
    params = _init(module, jnp.ones((2, 1, 4)), values, jnp.ones((2, 5), bool))
    memory = module.apply({"params": params}, values, jnp.ones((2, 5), bool), method="prepare")
    assert {leaf.shape[:2] for leaf in jax.tree.leaves(memory)} == {(2, 5)}


def test_attention_registry_maps_names_to_mechanisms():
    assert attention.ATTENTIONS["bahdanau"] is attention.AdditiveAttention
    assert attention.ATTENTIONS["luong_concat"] is attention.AdditiveAttention
    names = {"bahdanau", "luong_dot", "luong_general", "luong_concat", "multihead"}
    assert set(attention.ATTENTIONS) == names


def test_bfloat16_compute_keeps_float32_weights():
    values = jax.random.normal(jax.random.key(7), (1, 3, 4))
    mask = jnp.array([[True, True, False]])
    module = attention.GeneralAttention(4, dtype=jnp.bfloat16)
    query = jnp.ones((1, 1, 4))
    params = _init(module, query, values, mask)
    assert params["key_proj"]["kernel"].dtype == jnp.float32
    context, weights = _apply(module, params, query, values, mask)
    assert context.dtype == jnp.bfloat16 and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=TOL)
