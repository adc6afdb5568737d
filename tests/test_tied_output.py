"""Tests for s2s_jax.models.tied_output: same values and gradients as ``y @ E.T``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from s2s_jax.models.tied_output import tied_logits


def _plain(y, embedding):
    return y @ embedding.T


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (2, 3, 4, 5)])
def test_values_and_gradients_equal_plain_autodiff(shape):
    ky, ke, kw = jax.random.split(jax.random.key(0), 3)
    y = jax.random.normal(ky, shape)
    embedding = jax.random.normal(ke, (11, shape[-1]))
    weights = jax.random.normal(kw, (*shape[:-1], 11))  # a loss that weighs every logit

    def loss(fn):
        return lambda y, e: jnp.sum(jnp.tanh(fn(y, e)) * weights)

    want = _plain(y, embedding)
    np.testing.assert_allclose(tied_logits(y, embedding), want, rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(tied_logits), argnums=(0, 1)))(y, embedding)
    want = jax.jit(jax.grad(loss(_plain), argnums=(0, 1)))(y, embedding)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_give_bfloat16_logits_and_grads_close_to_float32():
    y = jax.random.normal(jax.random.key(1), (4, 6, 8))
    embedding = jax.random.normal(jax.random.key(2), (13, 8))
    low = (y.astype(jnp.bfloat16), embedding.astype(jnp.bfloat16))
    assert tied_logits(*low).dtype == jnp.bfloat16
    grads = jax.grad(lambda y, e: jnp.sum(tied_logits(y, e).astype(jnp.float32) ** 2), (0, 1))
    for g, w in zip(grads(*low), grads(y, embedding), strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(g.astype(jnp.float32), w, rtol=0.05, atol=0.5)


def test_gradients_inside_shard_map_match_autodiff():
    # Rows split over 4 devices, the embedding replicated: its gradient sums over the devices.
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    y = jax.random.normal(jax.random.key(3), (8, 5, 6))
    embedding = jax.random.normal(jax.random.key(4), (9, 6))

    def grads(fn):
        def per_shard(y, e):
            return jax.grad(lambda y, e: jnp.sum(jnp.tanh(fn(y, e))), argnums=(0, 1))(y, e)

        specs = (PartitionSpec("data"), PartitionSpec())
        return jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=specs, out_specs=specs))

    got, want = grads(tied_logits)(y, embedding), grads(_plain)(y, embedding)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
