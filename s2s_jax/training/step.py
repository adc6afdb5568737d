"""Pure train and eval steps, and the helpers that jit them (optionally with shardings).

``train_step`` knows nothing about devices: `jit_train_step` gives it its sharding signature
(in/out shardings and a donated state), MaxText style.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from s2s_jax.data.packing import shift_right_packed
from s2s_jax.data.vocab import BOS_ID
from s2s_jax.parallel.sharding import TrainShardings, in_sharding_context
from s2s_jax.training.losses import cross_entropy, shift_right, token_accuracy
from s2s_jax.training.state import TrainState

Batch = dict[str, jax.Array]
Sums = dict[str, jax.Array]  # loss_sum, correct, tokens: scalars summed over rows


def _check_accum(batch: Batch, grad_accum_steps: int) -> None:
    rows = batch["targets"].shape[0]
    if grad_accum_steps < 1 or rows % grad_accum_steps:
        raise ValueError(
            f"A batch of {rows} rows cannot be split into grad_accum_steps={grad_accum_steps} "
            "equal micro-batches; make data.batch_size a multiple of parallel.grad_accum_steps."
        )


def split_micro_batches(batch: Batch, k: int) -> Batch:
    """Splits ``[batch, ...]`` arrays into ``[k, batch / k, ...]`` micro-batches.

    Micro-batch ``j`` takes rows ``j, j + k, j + 2k, ...``: strided rows keep every device's
    contiguous block of the (batch-sharded) global batch busy in every micro-batch.
    """

    def split(x):
        micro = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        names = (None, "batch") + (None,) * (x.ndim - 1)
        return nn.with_logical_constraint(micro, names)

    return jax.tree.map(split, batch)


PACKING_KEYS = (
    "inputs_segmentation", "targets_segmentation", "inputs_position", "targets_position",
)  # fmt: skip


def model_inputs(batch: Batch) -> tuple[tuple[jax.Array, jax.Array], dict[str, jax.Array]]:
    """``(inputs, decoder_inputs), kwargs`` for ``model.apply`` from a batch.

    ``kwargs`` holds the source mask (``inputs_mask``, which every batch carries: lengths never
    come from token ids) and, for packed batches, the packing arrays; packed batches also
    restart the shifted decoder input with BOS at every segment.
    """
    if "inputs_mask" not in batch:
        raise ValueError(
            f"The batch has no 'inputs_mask' (keys: {sorted(batch)}): every batch carries its "
            "source mask, [batch, src_len] bool, True on real positions."
        )
    kwargs = {"inputs_mask": batch["inputs_mask"]}
    if "targets_segmentation" not in batch:
        return (batch["inputs"], shift_right(batch["targets"], BOS_ID)), kwargs
    decoder_inputs = shift_right_packed(batch["targets"], batch["targets_segmentation"], BOS_ID)
    kwargs.update({k: batch[k] for k in PACKING_KEYS if k in batch})
    return (batch["inputs"], decoder_inputs), kwargs


def _micro_grads(params, batch: Batch, rng, *, model, label_smoothing) -> tuple[Any, Sums]:
    """Gradient of the *summed* token loss of one (micro-)batch, and its sums."""

    args, packing = model_inputs(batch)

    def loss_fn(p):
        logits = model.apply({"params": p}, *args, train=True, rngs={"dropout": rng}, **packing)
        loss_sum, tokens = cross_entropy(logits, batch["targets"], label_smoothing)
        correct, _ = token_accuracy(logits, batch["targets"])
        return loss_sum, {"loss_sum": loss_sum, "correct": correct, "tokens": tokens}

    return jax.grad(loss_fn, has_aux=True)(params)


def accumulate_grads(
    params, batch: Batch, rng: jax.Array, grad_accum_steps: int, **loss_kwargs
) -> tuple[Any, Sums]:
    """Summed-loss gradients and sums over ``grad_accum_steps`` micro-batches (``lax.scan``).

    Token-loss sums and their gradients add across micro-batches, so dividing by the total token
    count afterwards gives the gradient of the whole batch's token-weighted mean loss (not a
    mean of per-micro-batch means).

    Args:
      params: the model parameters.
      batch: ``{inputs, inputs_mask: [batch, src_len], targets: [batch, tgt_len]}``.
      rng: dropout key; micro-batch ``j`` uses ``fold_in(rng, j)`` (k = 1 uses ``rng``).
      grad_accum_steps: k, a divisor of ``batch``.
      **loss_kwargs: ``model`` and ``label_smoothing``.

    Returns:
      ``(grads, sums)``: gradients of the summed token loss (params' structure) and scalar
      ``{loss_sum, correct, tokens}``.
    """
    if grad_accum_steps == 1:
        return _micro_grads(params, batch, rng, **loss_kwargs)
    micro = split_micro_batches(batch, grad_accum_steps)

    def body(carry, xs):
        index, micro_batch = xs
        grads, sums = _micro_grads(
            params, micro_batch, jax.random.fold_in(rng, index), **loss_kwargs
        )
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "tokens")}
    init = (jax.tree.map(jnp.zeros_like, params), zero_sums)
    (grads, sums), _ = jax.lax.scan(body, init, (jnp.arange(grad_accum_steps), micro))
    return grads, sums


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on ``batch`` ({inputs, inputs_mask, targets}, see ``model_inputs``).

    With ``grad_accum_steps`` k > 1 the batch is processed as k micro-batches of batch/k rows
    whose gradients are summed, which equals one step on the whole batch (less activation
    memory). Dropout randomness is ``fold_in(rng, step)``, so a resumed run repeats itself.
    """
    _check_accum(batch, grad_accum_steps)
    dropout_rng = jax.random.fold_in(rng, state.step)
    grads, sums = accumulate_grads(
        state.params, batch, dropout_rng, grad_accum_steps,
        model=model, label_smoothing=label_smoothing,
    )  # fmt: skip
    tokens = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": sums["loss_sum"] / tokens,
        "accuracy": sums["correct"] / tokens,
        "tokens": sums["tokens"],
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module) -> dict[str, jax.Array]:
    """Teacher-forced sums over a batch: loss_sum, correct and tokens (add, then divide)."""
    args, packing = model_inputs(batch)
    logits = model.apply({"params": params}, *args, train=False, **packing)
    loss_sum, tokens = cross_entropy(logits, batch["targets"])
    correct, _ = token_accuracy(logits, batch["targets"])
    return {"loss_sum": loss_sum, "correct": correct, "tokens": tokens}


def jit_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    label_smoothing: float = 0.0,
    *,
    grad_accum_steps: int = 1,
    shardings: TrainShardings | None = None,
):
    """``train_step`` jitted with the state donated (its buffers are reused for the new one).

    With ``shardings`` the step is traced under the mesh's logical-axis rules and jitted with
    explicit in/out shardings: ``(state, batch, rng) -> (state, metrics)`` with the state
    sharded as ``shardings.state``, batch rows as ``shardings.batch``, rng and metrics
    replicated.
    """
    fn = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule,
        label_smoothing=label_smoothing, grad_accum_steps=grad_accum_steps,
    )  # fmt: skip
    if shardings is None:
        return jax.jit(fn, donate_argnums=(0,))
    return jax.jit(
        in_sharding_context(fn, shardings.mesh),
        in_shardings=(shardings.state, shardings.batch, shardings.replicated),
        out_shardings=(shardings.state, shardings.replicated),
        donate_argnums=(0,),
    )


def jit_eval_step(model: nn.Module, shardings: TrainShardings | None = None):
    """``eval_step`` jitted; with ``shardings``, params sharded and the sums replicated.

    The batch's sharding is left to its arrays (see ``parallel.sharding.put_global``).
    """
    fn = functools.partial(eval_step, model=model)
    if shardings is None:
        return jax.jit(fn)
    return jax.jit(
        in_sharding_context(fn, shardings.mesh),
        in_shardings=(shardings.params, None),
        out_shardings=shardings.replicated,
    )
