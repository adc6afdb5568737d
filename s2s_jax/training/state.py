"""The train state: everything that changes during training, as one pytree."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32, optimizer updates applied so far
    params: Any  # model parameters (float32 storage)
    opt_state: Any  # optax state for `params`


def init_variables(model: nn.Module, rng: jax.Array, src_len: int = 8, tgt_len: int = 8):
    """Initialises model parameters from dummy shapes; returns boxed variables."""
    inputs = jnp.ones((1, src_len), jnp.int32)
    targets = jnp.ones((1, tgt_len), jnp.int32)
    return model.init({"params": rng, "dropout": rng}, inputs, targets, train=False)


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation):
    """Returns ``init(rng) -> TrainState`` (pure; jit it or eval_shape it)."""

    def init(rng: jax.Array) -> TrainState:
        params = nn.meta.unbox(init_variables(model, rng)["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
