"""Ancestral sampling (temperature, top-k, top-p) and greedy decoding in one loop.

Greedy decoding is sampling at temperature 0. The constraint processors are the ones beam
search uses; temperature, top-k and top-p only shape the distribution tokens are drawn from,
while scores stay summed log-probs under the unmodified model distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding import hypotheses, processors
from s2s_jax.decoding.hypotheses import DecodeResult, TokensToLogits

# (logprobs [batch, 1, vocab], rng) -> tokens [batch, 1] int32
SelectFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class SampleState:
    """Loop carry of `sample` and `greedy` (one hypothesis per row, kept as beam 1)."""

    step: jax.Array  # [] int32, tokens generated so far
    sequences: jax.Array  # [batch, 1, max_length] int32, EOS then PAD once finished
    scores: jax.Array  # [batch, 1] float32, summed model log-probs
    lengths: jax.Array  # [batch, 1] int32, tokens incl. EOS
    finished: jax.Array  # [batch, 1] bool
    cache: Any  # pytree, every leaf [batch, 1, ...]


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the `k` largest logits (ties with the k-th are kept too); the rest become -inf.

    Args:
        logits: `[..., vocab]`.
        k: tokens kept; 0 keeps all.
    """
    if k == 0:
        return logits
    if k > logits.shape[-1]:
        raise ValueError(
            f"top_k={k} exceeds the vocabulary of {logits.shape[-1]} tokens; use 0 (all) or less."
        )
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth_largest, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Keeps the smallest set of most likely tokens whose probability mass is >= `p`.

    Tokens tied with the least likely kept token are kept too; the rest become -inf.

    Args:
        logits: `[..., vocab]`.
        p: mass in (0, 1]; 1 keeps all.
    """
    if p >= 1.0:
        return logits
    probs = jax.nn.softmax(logits, axis=-1)
    sorted_probs = jnp.flip(jnp.sort(probs, axis=-1), axis=-1)
    # A token is needed while the mass of the tokens before it is still below p.
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    needed = jnp.where(mass_before < p, sorted_probs, jnp.inf)
    threshold = jnp.min(needed, axis=-1, keepdims=True)
    return jnp.where(probs < threshold, -jnp.inf, logits)


def _argmax_select(logprobs: jax.Array, rng: jax.Array) -> jax.Array:
    del rng  # greedy decoding is deterministic
    return jnp.argmax(logprobs, axis=-1).astype(jnp.int32)


def _sampling_select(
    logprobs: jax.Array, rng: jax.Array, *, temperature: float, top_k: int, top_p: float
) -> jax.Array:
    logits = top_p_filter(top_k_filter(logprobs / temperature, top_k), top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def sample(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    rng: jax.Array,
    max_length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_length: int = 0,
    max_lengths: jax.Array | None = None,
    no_repeat_ngram_size: int = 0,
    forced_prefix: jax.Array | None = None,
    eos_id: int = EOS_ID,
    bos_id: int = BOS_ID,
) -> DecodeResult:
    """Draws one sequence per row; call it under `jax.jit`.

    Args:
        tokens_to_logits: `(ids [batch, 1], cache) -> (logits [batch, 1, vocab], cache)`.
        cache: pytree, every leaf `[batch, 1, ...]`.
        rng: PRNG key; step t draws with `fold_in(rng, t)`.
        max_length: static, the most tokens generated (EOS included).
        temperature: static, >= 0; 0 is greedy (argmax) and ignores top_k and top_p.
        top_k: static, sample among the k most likely tokens; 0 disables.
        top_p: static, sample from the smallest set with mass >= top_p (nucleus); 1 disables.
        min_length, max_lengths, no_repeat_ngram_size, forced_prefix: as in `beam_search`.
        eos_id: end-of-sequence id.
        bos_id: id fed at the first step.

    Returns:
        DecodeResult with nbest = 1: sequences `[batch, 1, max_length]`, scores `[batch, 1]`
        (summed log-probs under the unmodified model), lengths `[batch, 1]`.

    Raises:
        ValueError: an option is out of range or the cache is not beam 1.
    """
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got temperature="
            f"{temperature}, top_k={top_k}, top_p={top_p}."
        )
    if temperature == 0:
        select = _argmax_select
    else:
        select = functools.partial(
            _sampling_select, temperature=temperature, top_k=top_k, top_p=top_p
        )
    options = dict(
        min_length=min_length,
        max_lengths=max_lengths,
        no_repeat_ngram_size=no_repeat_ngram_size,
        forced_prefix=forced_prefix,
        eos_id=eos_id,
    )
    return _decode_one(tokens_to_logits, cache, rng, select, max_length, bos_id, options)


def greedy(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    max_length: int,
    min_length: int = 0,
    max_lengths: jax.Array | None = None,
    no_repeat_ngram_size: int = 0,
    forced_prefix: jax.Array | None = None,
    eos_id: int = EOS_ID,
    bos_id: int = BOS_ID,
) -> DecodeResult:
    """Takes the most likely allowed token at every step; arguments as in `sample`."""
    return sample(
        tokens_to_logits,
        cache,
        rng=jax.random.key(0),
        max_length=max_length,
        temperature=0.0,
        min_length=min_length,
        max_lengths=max_lengths,
        no_repeat_ngram_size=no_repeat_ngram_size,
        forced_prefix=forced_prefix,
        eos_id=eos_id,
        bos_id=bos_id,
    )


def _decode_one(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    rng: jax.Array,
    select: SelectFn,
    max_length: int,
    bos_id: int,
    options: dict[str, Any],
) -> DecodeResult:
    """The loop shared by `sample` and `greedy`; `select` picks each step's tokens."""
    batch = hypotheses.cache_batch_size(cache)
    constraints = processors.make_constraints(batch, max_length=max_length, **options)
    state = SampleState(
        step=jnp.array(0, jnp.int32),
        sequences=jnp.full((batch, 1, max_length), PAD_ID, jnp.int32),
        scores=jnp.zeros((batch, 1), jnp.float32),
        lengths=jnp.zeros((batch, 1), jnp.int32),
        finished=jnp.zeros((batch, 1), bool),
        cache=cache,
    )

    def cond(state: SampleState) -> jax.Array:
        return (state.step < max_length) & ~jnp.all(state.finished)

    def body(state: SampleState) -> SampleState:
        ids = hypotheses.last_tokens(state.sequences, state.step, bos_id)
        logits, cache = tokens_to_logits(ids, state.cache)
        raw = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        logprobs = processors.apply_constraints(constraints, raw, state.sequences, state.step)
        tokens = select(logprobs, jax.random.fold_in(rng, state.step))
        tokens = jnp.where(state.finished, PAD_ID, tokens)
        token_logprobs = jnp.take_along_axis(raw, tokens[..., None], axis=-1)[..., 0]
        live = ~state.finished
        return state.replace(
            step=state.step + 1,
            sequences=hypotheses.write_tokens(state.sequences, state.step, tokens),
            scores=state.scores + jnp.where(live, token_logprobs, 0.0),
            lengths=state.lengths + live.astype(jnp.int32),
            finished=state.finished | (tokens == constraints.eos_id),
            cache=cache,
        )

    state = jax.lax.while_loop(cond, body, state)
    return DecodeResult(
        sequences=state.sequences, scores=state.scores, lengths=state.lengths, steps=state.step
    )
