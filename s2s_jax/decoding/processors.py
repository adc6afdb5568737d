"""Log-probability processors shared by beam search, greedy decoding and sampling.

Each processor maps log-probabilities `[batch, beam, vocab]` to log-probabilities of the same
shape, only ever setting entries to -inf or, for forced tokens, keeping the model's own
log-prob of the forced token. Scores therefore stay log-probs under the unmodified model.
`apply_constraints` chains them in a fixed order; later processors win conflicts: a forced
prefix overrides min_length and n-gram blocking, and the forced EOS at a row's length cap
overrides everything.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data.vocab import EOS_ID, PAD_ID


@flax.struct.dataclass
class DecodeConstraints:
    """Per-call constraints; build with `make_constraints`, which validates them."""

    caps: jax.Array  # [batch] int32, most tokens a row may generate (EOS included)
    forced_prefix: jax.Array  # [batch, prefix] int32, PAD_ID past a row's prefix
    prefix_lengths: jax.Array  # [batch] int32, leading non-PAD tokens of forced_prefix
    min_length: int = flax.struct.field(pytree_node=False, default=0)
    no_repeat_ngram_size: int = flax.struct.field(pytree_node=False, default=0)
    eos_id: int = flax.struct.field(pytree_node=False, default=EOS_ID)


def make_constraints(
    batch_size: int,
    *,
    max_length: int,
    min_length: int = 0,
    max_lengths: jax.Array | None = None,
    no_repeat_ngram_size: int = 0,
    forced_prefix: jax.Array | None = None,
    eos_id: int = EOS_ID,
) -> DecodeConstraints:
    """Validates decoding options and packs them for `apply_constraints`.

    Args:
        batch_size: rows being decoded.
        max_length: static, the most tokens generated (EOS included).
        min_length: EOS is forbidden while fewer than `min_length` tokens have been generated,
            so a hypothesis has at least `min_length` tokens before its EOS.
        max_lengths: optional `[batch]` int32 per-row cap, clipped to `[1, max_length]`.
        no_repeat_ngram_size: n > 0 forbids any token completing an n-gram already generated.
        forced_prefix: optional `[batch, prefix]` int32; a row's first tokens are forced to its
            leading non-PAD entries.
        eos_id: end-of-sequence id.

    Raises:
        ValueError: an option is out of range or an array has the wrong shape.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}.")
    if not 0 <= min_length < max_length:
        raise ValueError(
            f"min_length={min_length} must be in [0, max_length={max_length}): at least "
            "min_length tokens precede EOS, and EOS must fit within max_length."
        )
    if no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {no_repeat_ngram_size}.")
    caps = jnp.full((batch_size,), max_length, jnp.int32)
    if max_lengths is not None:
        _check_shape("max_lengths", max_lengths, (batch_size,))
        caps = jnp.clip(jnp.asarray(max_lengths, jnp.int32), 1, max_length)
    if forced_prefix is None:
        forced_prefix = jnp.zeros((batch_size, 0), jnp.int32)
    _check_shape("forced_prefix", forced_prefix, (batch_size, None))
    forced_prefix = jnp.asarray(forced_prefix, jnp.int32)
    # A row's prefix ends at its first PAD, whatever follows it.
    is_prefix = jnp.cumprod(forced_prefix != PAD_ID, axis=1)
    return DecodeConstraints(
        caps=caps,
        forced_prefix=forced_prefix,
        prefix_lengths=jnp.sum(is_prefix, axis=1).astype(jnp.int32),
        min_length=min_length,
        no_repeat_ngram_size=no_repeat_ngram_size,
        eos_id=eos_id,
    )


def _check_shape(name: str, array: jax.Array, expected: tuple[int | None, ...]) -> None:
    shape = np.shape(array)
    if len(shape) != len(expected) or any(
        want is not None and got != want for got, want in zip(shape, expected, strict=True)
    ):
        pretty = "[" + ", ".join("*" if d is None else str(d) for d in expected) + "]"
        raise ValueError(f"{name} must have shape {pretty} (batch first), got {shape}.")


def block_eos_before_min_length(
    logprobs: jax.Array, step: jax.Array, min_length: int, eos_id: int
) -> jax.Array:
    """Sets EOS to -inf while fewer than `min_length` tokens exist. `[batch, beam, vocab]`."""
    is_eos = jnp.arange(logprobs.shape[-1]) == eos_id
    return jnp.where((step < min_length) & is_eos, -jnp.inf, logprobs)


def block_repeated_ngrams(
    logprobs: jax.Array, sequences: jax.Array, step: jax.Array, ngram_size: int
) -> jax.Array:
    """Sets to -inf every token that would complete an n-gram the hypothesis already holds.

    Args:
        logprobs: `[batch, beam, vocab]`.
        sequences: `[batch, beam, max_length]` int32, the first `step` entries are generated.
        step: `[]` int32, tokens generated so far (the next token goes at this position).
        ngram_size: n; 0 disables the block.

    Returns:
        `[batch, beam, vocab]` log-probs.
    """
    n = ngram_size
    # Earlier n-grams start at j with j + n - 1 <= step - 1 <= max_length - 2.
    num_starts = sequences.shape[-1] - n
    if n == 0 or num_starts <= 0:
        return logprobs
    match = jnp.ones(sequences.shape[:2] + (num_starts,), bool)
    if n > 1:
        start = jnp.maximum(step - (n - 1), 0)
        context = jax.lax.dynamic_slice_in_dim(sequences, start, n - 1, axis=2)
        for i in range(n - 1):
            match &= sequences[..., i : i + num_starts] == context[..., i : i + 1]
    match &= jnp.arange(num_starts) + n - 1 < step
    following = sequences[..., n - 1 : n - 1 + num_starts]
    # A scatter-add keeps memory at [batch, beam, vocab]; a one-hot would be x max_length.
    batch, beam, vocab = logprobs.shape
    rows = jnp.arange(batch * beam)[:, None]
    hits = jnp.zeros((batch * beam, vocab), jnp.int32)
    hits = hits.at[rows, following.reshape(batch * beam, -1)].add(
        match.reshape(batch * beam, -1).astype(jnp.int32)
    )
    return jnp.where(hits.reshape(logprobs.shape) > 0, -jnp.inf, logprobs)


def force_prefix(
    logprobs: jax.Array,
    raw_logprobs: jax.Array,
    step: jax.Array,
    forced_prefix: jax.Array,
    prefix_lengths: jax.Array,
) -> jax.Array:
    """Inside a row's prefix, keeps only the forced token, at its unmodified model log-prob.

    Args:
        logprobs: `[batch, beam, vocab]` processed so far.
        raw_logprobs: `[batch, beam, vocab]` model log-probs.
        step: `[]` int32, tokens generated so far.
        forced_prefix: `[batch, prefix]` int32.
        prefix_lengths: `[batch]` int32.

    Returns:
        `[batch, beam, vocab]` log-probs.
    """
    prefix = forced_prefix.shape[1]
    if prefix == 0:
        return logprobs
    token = jnp.take(forced_prefix, jnp.minimum(step, prefix - 1), axis=1)  # [batch]
    is_forced = jnp.arange(logprobs.shape[-1]) == token[:, None, None]
    forced = jnp.where(is_forced, raw_logprobs, -jnp.inf)
    active = (step < prefix_lengths)[:, None, None]
    return jnp.where(active, forced, logprobs)


def force_eos_at_cap(
    logprobs: jax.Array, raw_logprobs: jax.Array, step: jax.Array, caps: jax.Array, eos_id: int
) -> jax.Array:
    """Forces EOS (at its model log-prob) for the token that reaches a row's cap.

    Args:
        logprobs: `[batch, beam, vocab]` processed so far.
        raw_logprobs: `[batch, beam, vocab]` model log-probs.
        step: `[]` int32, tokens generated so far.
        caps: `[batch]` int32, most tokens per row (EOS included).
        eos_id: end-of-sequence id.

    Returns:
        `[batch, beam, vocab]` log-probs.
    """
    is_eos = jnp.arange(logprobs.shape[-1]) == eos_id
    eos_only = jnp.where(is_eos, raw_logprobs, -jnp.inf)
    at_cap = (step + 1 >= caps)[:, None, None]
    return jnp.where(at_cap, eos_only, logprobs)


def apply_constraints(
    constraints: DecodeConstraints,
    raw_logprobs: jax.Array,
    sequences: jax.Array,
    step: jax.Array,
) -> jax.Array:
    """Runs every processor in order (later ones win conflicts).

    Args:
        constraints: from `make_constraints`.
        raw_logprobs: `[batch, beam, vocab]` float32 model log-probs (log_softmax of logits).
        sequences: `[batch, beam, max_length]` int32 tokens generated so far.
        step: `[]` int32, tokens generated so far.

    Returns:
        `[batch, beam, vocab]` float32 log-probs with forbidden tokens at -inf.
    """
    c = constraints
    logprobs = block_eos_before_min_length(raw_logprobs, step, c.min_length, c.eos_id)
    logprobs = block_repeated_ngrams(logprobs, sequences, step, c.no_repeat_ngram_size)
    logprobs = force_prefix(logprobs, raw_logprobs, step, c.forced_prefix, c.prefix_lengths)
    return force_eos_at_cap(logprobs, raw_logprobs, step, c.caps, c.eos_id)
