"""shard_map data parallelism: the gradient equals the single-device gradient (scale included)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from s2s_jax.config import load_experiment
from s2s_jax.data.vocab import BOS_ID
from s2s_jax.parallel.collectives import data_parallel_value_and_grad
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.parallel.rules import BATCH_AXES
from s2s_jax.run.components import build
from s2s_jax.training.losses import cross_entropy, shift_right


def model_loss_sums(model):
    def loss_sums(params, batch):
        logits = model.apply(
            {"params": params},
            batch["inputs"],
            shift_right(batch["targets"], BOS_ID),
            inputs_mask=batch["inputs_mask"],
            train=False,
        )
        return cross_entropy(logits, batch["targets"])

    return loss_sums


@pytest.mark.parametrize("sizes", [(8, 1, 1), (2, 2, 2)])
def test_shard_map_gradient_equals_single_device_gradient(sizes):
    # The Transformer: the RNN's scans start from a replicated zero carry, which check_vma
    # rejects inside shard_map (the carry turns batch-varying after one step).
    c = build(load_experiment("experiments/reverse_transformer.py", "tiny"))
    params, batch = c.init_state().params, next(c.data.train)
    loss_sums = model_loss_sums(c.model)

    def mean_loss(p):
        loss_sum, tokens = loss_sums(p, batch)
        return loss_sum / tokens

    want_loss, want_grads = jax.jit(jax.value_and_grad(mean_loss))(params)
    fn = jax.jit(data_parallel_value_and_grad(loss_sums, make_mesh(MeshConfig(*sizes))))
    loss, grads = fn(params, batch)
    # Only the order of float32 sums over 16 rows changes (per shard, then across shards).
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_grads_of_replicated_params_are_already_summed_over_shards():
    """With check_vma=True the pmap recipe (per-shard mean loss, then pmean) is 8x too big."""
    mesh = make_mesh(MeshConfig(8, 1, 1))
    w = jnp.asarray([1.0, -2.0, 0.5])
    x = jnp.arange(16 * 3, dtype=jnp.float32).reshape(16, 3) / 10

    def local_mean_loss(w, x):
        return jnp.mean((x @ w) ** 2)

    def pmap_style(w, x):
        grads = jax.grad(local_mean_loss)(w, x)
        # pmean of an invariant value is that value: it does not divide the implicit sum.
        return grads, jax.lax.pmean(grads, BATCH_AXES), jax.lax.psum(grads, BATCH_AXES)

    specs = dict(in_specs=(P(), P(BATCH_AXES)), out_specs=(P(), P(), P()))
    implicit, pmeaned, psummed = jax.shard_map(pmap_style, mesh=mesh, **specs)(w, x)
    true = jax.grad(local_mean_loss)(w, x)  # the full batch's mean loss
    # Exact small-integer-scale float32 arithmetic on 16 rows; 1e-5 covers summation order.
    np.testing.assert_allclose(implicit, 8 * true, rtol=1e-5)  # summed over 8 shards already
    np.testing.assert_allclose(pmeaned, 8 * true, rtol=1e-5)
    np.testing.assert_allclose(psummed, 64 * true, rtol=1e-5)

    # The helper scales each shard's sum by the global token count instead: exact gradient.
    def loss_sums(w, x):
        return jnp.sum((x @ w) ** 2), jnp.asarray(x.shape[0], jnp.float32)

    _, grads = data_parallel_value_and_grad(loss_sums, mesh)(w, x)
    np.testing.assert_allclose(grads, true, rtol=1e-5)
