"""Data parallelism written out with ``jax.shard_map`` and explicit collectives.

The train step relies on jit and sharding propagation; this module is the explicit version, for
code where a hand-placed collective is clearer (custom losses, per-shard statistics).

Gradient scale under ``check_vma=True`` (the default): parameters passed in replicated are
*invariant* over the batch axes, and the data they meet is *varying*, so JAX inserts an
implicit ``pvary`` whose transpose is a ``psum``. The gradient that ``jax.grad`` returns inside
the shard_map is therefore already summed over the batch axes. A pmap-style ``psum``/``pmean``
of those gradients would multiply them by the number of shards (``psum``) or double-count
them before averaging; do not add one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from s2s_jax.parallel.rules import BATCH_AXES

# (params, batch) -> (loss_sum, tokens): summed token loss and token count of some batch rows.
LossSums = Callable[[Any, Any], tuple[jax.Array, jax.Array]]


def data_parallel_value_and_grad(
    loss_sums: LossSums, mesh: Mesh, axes: tuple[str, ...] = BATCH_AXES
) -> Callable[[Any, Any], tuple[jax.Array, Any]]:
    """Token-weighted mean loss and its gradient, each device working on its own rows.

    Args:
      loss_sums: ``(params, batch) -> (loss_sum, tokens)`` for a block of rows.
      mesh: the device mesh; ``params`` are replicated on it, batch rows split over ``axes``.
      axes: the mesh axes the batch rows are split over.

    Returns:
      ``f(params, batch) -> (loss, grads)``, equal to ``jax.value_and_grad`` of
      ``loss_sum / tokens`` over the whole batch; ``batch`` leaves are ``[batch, ...]`` with
      ``batch`` divisible by the product of the ``axes`` sizes.
    """

    def per_shard(params, batch):
        def local_sums(p):
            return loss_sums(p, batch)

        (loss_sum, local_tokens), grad_sum = jax.value_and_grad(local_sums, has_aux=True)(params)
        tokens = jnp.maximum(jax.lax.psum(local_tokens, axes), 1.0)
        # grad_sum is already summed over `axes` (see the module docstring); loss_sum is not.
        grads = jax.tree.map(lambda g: g / tokens, grad_sum)
        return jax.lax.psum(loss_sum, axes) / tokens, grads

    return jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(axes)),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )
