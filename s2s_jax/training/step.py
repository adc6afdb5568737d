"""Pure train and eval steps, and the helpers that jit them."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from s2s_jax.data.vocab import BOS_ID
from s2s_jax.training.losses import cross_entropy, shift_right, token_accuracy
from s2s_jax.training.state import TrainState

Batch = dict[str, jax.Array]


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    label_smoothing: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on ``batch`` ({inputs, targets}: [batch, length] int32).

    Dropout randomness is ``fold_in(rng, step)``, so a resumed run repeats itself exactly.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    decoder_inputs = shift_right(batch["targets"], BOS_ID)

    def loss_fn(params):
        logits = model.apply(
            {"params": params},
            batch["inputs"],
            decoder_inputs,
            train=True,
            rngs={"dropout": dropout_rng},
        )
        loss_sum, tokens = cross_entropy(logits, batch["targets"], label_smoothing)
        return loss_sum / jnp.maximum(tokens, 1.0), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct, tokens = token_accuracy(logits, batch["targets"])
    metrics = {
        "loss": loss,
        "accuracy": correct / jnp.maximum(tokens, 1.0),
        "tokens": tokens,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module) -> dict[str, jax.Array]:
    """Teacher-forced sums over a batch: loss_sum, correct and tokens (add, then divide)."""
    logits = model.apply(
        {"params": params}, batch["inputs"], shift_right(batch["targets"], BOS_ID), train=False
    )
    loss_sum, tokens = cross_entropy(logits, batch["targets"])
    correct, _ = token_accuracy(logits, batch["targets"])
    return {"loss_sum": loss_sum, "correct": correct, "tokens": tokens}


def jit_train_step(model, tx, schedule, label_smoothing: float = 0.0):
    """``train_step`` jitted with the state donated (its buffers are reused for the new one)."""
    fn = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule, label_smoothing=label_smoothing
    )
    return jax.jit(fn, donate_argnums=(0,))


def jit_eval_step(model):
    return jax.jit(functools.partial(eval_step, model=model))
