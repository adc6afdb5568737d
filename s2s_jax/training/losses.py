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
    # Written with logsumexp and a one-hot select rather than log_softmax + take_along_axis: the
    # same values, but the gradient is one elementwise pass over the logits (softmax - one-hot)
    # instead of a scatter into a zeroed [batch, length, vocab] array, which on CPU cost more
    # than a tenth of a Transformer training step.
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = lse - _target_logit(logits, targets)
    if label_smoothing:
        # Subtract the smoothed distribution's entropy so a perfect model scores 0.
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        smooth = vocab * lse - jnp.sum(logits, axis=-1) - nll  # -sum(log p) over the others
        nll = confidence * nll + low * smooth
        nll -= _entropy_floor(confidence, low, vocab)
    mask = (targets != PAD_ID).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask)


def _target_logit(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``logits[..., targets]`` as a masked sum, [batch, length]."""
    hit = jnp.arange(logits.shape[-1], dtype=targets.dtype) == targets[..., None]
    return jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)


def _entropy_floor(confidence: float, low: float, vocab: int) -> float:
    terms = -confidence * jnp.log(confidence)
    if low > 0:
        terms -= (vocab - 1) * low * jnp.log(low)
    return terms


def token_accuracy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed masked argmax accuracy: (num_correct, num_tokens).

    A token counts as correct when its logit is the maximum (a tie for the maximum counts too,
    where ``argmax`` would pick the first index): a max-reduction is much cheaper on CPU than
    ``argmax``'s value-and-index reduction over the vocabulary.
    """
    mask = targets != PAD_ID
    logits = logits.astype(jnp.float32)
    correct = (_target_logit(logits, targets) >= jnp.max(logits, axis=-1)) & mask
    return jnp.sum(correct).astype(jnp.float32), jnp.sum(mask).astype(jnp.float32)


def shift_right(targets: jax.Array, bos_id: int) -> jax.Array:
    """Decoder inputs: ``[BOS, t_0, ..., t_{n-2}]`` with PAD kept as PAD. [batch, length]."""
    shifted = jnp.pad(targets, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]
    # Positions after the end stay PAD so the decoder never reads past EOS into padding.
    keep = jnp.pad(targets != PAD_ID, ((0, 0), (1, 0)), constant_values=True)[:, :-1]
    return jnp.where(keep, shifted, PAD_ID)
