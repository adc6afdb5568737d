"""The train state: everything that changes during training, as one pytree."""

from __future__ import annotations

from collections.abc import Callable
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
    """Initialises model parameters from dummy shapes; returns boxed variables.

    The dummy source comes from the model (``example_inputs``): token ids or float frames.
    """
    inputs, inputs_mask = model.example_inputs(src_len)
    targets = jnp.ones((1, tgt_len), jnp.int32)
    return model.init(
        {"params": rng, "dropout": rng}, inputs, targets, inputs_mask=inputs_mask, train=False
    )


def make_boxed_init_fn(
    model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[jax.Array], TrainState]:
    """Returns ``init(rng) -> TrainState`` whose params and optimizer state keep their boxes.

    The ``nn.Partitioned`` boxes carry the logical axis names; optax maps over them, so the
    optimizer's moments carry their parameter's names too. Use it under ``jax.eval_shape`` to
    derive shardings (see ``parallel.sharding.state_shardings``).
    """

    def init(rng: jax.Array) -> TrainState:
        params = init_variables(model, rng)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init


def make_init_fn(
    model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[jax.Array], TrainState]:
    """Returns ``init(rng) -> TrainState`` of plain arrays (pure; jit it or eval_shape it)."""
    boxed_init = make_boxed_init_fn(model, tx)

    def init(rng: jax.Array) -> TrainState:
        return nn.meta.unbox(boxed_init(rng))

    return init


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
