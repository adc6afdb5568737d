"""Masked token-level losses and accuracies."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import PAD_ID


def cross_entropy(
    logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Summed masked cross-entropy.

    Args:
      logits: [batch, length, vocab] float.
      targets: [batch, length] int32; PAD_ID positions are ignored.
      label_smoothing: mass spread uniformly over the vocabulary.

    Returns:
      (loss_sum, num_tokens): scalars; the mean loss is their ratio.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if label_smoothing:
        # Subtract the smoothed distribution's entropy so a perfect model scores 0.
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (logits.shape[-1] - 1)
        smooth = -jnp.sum(logp, axis=-1) - nll
        nll = confidence * nll + low * smooth
        nll -= _entropy_floor(confidence, low, logits.shape[-1])
    mask = (targets != PAD_ID).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask)


def _entropy_floor(confidence: float, low: float, vocab: int) -> float:
    terms = -confidence * jnp.log(confidence)
    if low > 0:
        terms -= (vocab - 1) * low * jnp.log(low)
    return terms


def token_accuracy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed masked argmax accuracy: (num_correct, num_tokens)."""
    mask = targets != PAD_ID
    correct = (jnp.argmax(logits, axis=-1) == targets) & mask
    return jnp.sum(correct).astype(jnp.float32), jnp.sum(mask).astype(jnp.float32)


def shift_right(targets: jax.Array, bos_id: int) -> jax.Array:
    """Decoder inputs: ``[BOS, t_0, ..., t_{n-2}]`` with PAD kept as PAD. [batch, length]."""
    shifted = jnp.pad(targets, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]
    # Positions after the end stay PAD so the decoder never reads past EOS into padding.
    keep = jnp.pad(targets != PAD_ID, ((0, 0), (1, 0)), constant_values=True)[:, :-1]
    return jnp.where(keep, shifted, PAD_ID)
