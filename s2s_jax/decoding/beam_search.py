"""Beam search with a GNMT length penalty, n-best output and exact early stopping.

One `lax.while_loop` step: score every (beam, token) candidate, move the EOS candidates that
rank within the top `beam_size` of all candidates into the finished set (as fairseq and
Hugging Face do), and keep the `beam_size` best non-EOS candidates alive. So beam 1 equals
greedy decoding only at alpha = 0; with alpha > 0 it keeps greedy's hypothesis when EOS wins
but continues the best other token too, and returns a longer hypothesis when its
length-normalised score is higher (never a lower score than greedy's). Every alive
hypothesis is forced to EOS at its row's length cap, so when the loop ends the alive
hypotheses have already entered the finished set, scored as finished.

A row stops once no alive hypothesis can beat its worst kept finished one: log-probs only
decrease and the penalty grows with length, so the best score an alive hypothesis with
log-prob `lp <= 0` can reach is `lp / penalty(cap)` for alpha > 0 and `lp` for alpha = 0.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding import hypotheses, processors, top_k
from s2s_jax.decoding.hypotheses import DecodeResult, TokensToLogits


@flax.struct.dataclass
class BeamState:
    """Loop carry of `beam_search`."""

    step: jax.Array  # [] int32, tokens generated so far
    alive_seqs: jax.Array  # [batch, beam, max_length] int32, PAD past `step`
    alive_logprobs: jax.Array  # [batch, beam] float32, summed log-probs, -inf for empty beams
    alive_cache: Any  # pytree, every leaf [batch, beam, ...]
    finished_seqs: jax.Array  # [batch, nbest, max_length] int32, EOS then PAD
    finished_scores: jax.Array  # [batch, nbest] float32, length-normalised, best first
    finished_lengths: jax.Array  # [batch, nbest] int32, tokens incl. EOS


def length_penalty(lengths: jax.Array, alpha: float) -> jax.Array:
    """GNMT length penalty `((5 + len) / 6) ** alpha`; scores are `logprob / penalty`."""
    return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    *,
    beam_size: int,
    max_length: int,
    alpha: float = 0.6,
    min_length: int = 0,
    max_lengths: jax.Array | None = None,
    nbest: int = 1,
    no_repeat_ngram_size: int = 0,
    forced_prefix: jax.Array | None = None,
    eos_id: int = EOS_ID,
    bos_id: int = BOS_ID,
) -> DecodeResult:
    """Finds the `nbest` highest-scoring sequences of every row; call it under `jax.jit`.

    Args:
        tokens_to_logits: `(ids [batch, beam], cache) -> (logits [batch, beam, vocab], cache)`.
        cache: pytree built for beam 1, every leaf `[batch, 1, ...]`.
        beam_size: static, hypotheses kept alive per row.
        max_length: static, the most tokens generated (EOS included).
        alpha: length-penalty exponent (>= 0); 0 ranks by summed log-prob.
        min_length: at least this many tokens precede EOS.
        max_lengths: optional `[batch]` int32 per-row cap (<= max_length); EOS is forced there.
        nbest: static, hypotheses returned per row (<= beam_size).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a hypothesis.
        forced_prefix: optional `[batch, prefix]` int32, PAD_ID past a row's prefix; the prefix
            tokens are forced and their log-probs count toward the score.
        eos_id: end-of-sequence id.
        bos_id: id fed at the first step.

    Returns:
        DecodeResult with sequences `[batch, nbest, max_length]`, length-normalised scores
        `[batch, nbest]` and lengths `[batch, nbest]`, best first.

    Raises:
        ValueError: a size or option is out of range, or the cache is not beam 1.
    """
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(
            f"need beam_size >= 1 and 1 <= nbest <= beam_size, got beam_size={beam_size}, "
            f"nbest={nbest}; raise beam_size to return more hypotheses."
        )
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (GNMT length penalty), got {alpha}.")
    batch = hypotheses.cache_batch_size(cache)
    constraints = processors.make_constraints(
        batch,
        max_length=max_length,
        min_length=min_length,
        max_lengths=max_lengths,
        no_repeat_ngram_size=no_repeat_ngram_size,
        forced_prefix=forced_prefix,
        eos_id=eos_id,
    )
    state = _initial_state(cache, batch, beam_size, nbest, max_length)

    def cond(state: BeamState) -> jax.Array:
        rows_done = _rows_done(state, constraints.caps, alpha)
        return (state.step < max_length) & ~jnp.all(rows_done)

    def body(state: BeamState) -> BeamState:
        return _beam_step(state, tokens_to_logits, constraints, alpha, bos_id)

    state = jax.lax.while_loop(cond, body, state)
    return _result(state)


def _initial_state(
    cache: Any, batch: int, beam_size: int, nbest: int, max_length: int
) -> BeamState:
    # Only beam 0 is live at first, so the identical tiled beams do not yield duplicates.
    alive_logprobs = jnp.full((batch, beam_size), -jnp.inf).at[:, 0].set(0.0)
    return BeamState(
        step=jnp.array(0, jnp.int32),
        alive_seqs=jnp.full((batch, beam_size, max_length), PAD_ID, jnp.int32),
        alive_logprobs=alive_logprobs,
        alive_cache=hypotheses.tile_beams(cache, beam_size),
        finished_seqs=jnp.full((batch, nbest, max_length), PAD_ID, jnp.int32),
        finished_scores=jnp.full((batch, nbest), -jnp.inf),
        finished_lengths=jnp.zeros((batch, nbest), jnp.int32),
    )


def _rows_done(state: BeamState, caps: jax.Array, alpha: float) -> jax.Array:
    """`[batch]` bool: no alive hypothesis can still beat the worst kept finished one.

    Rows past their cap have no live beams (their bound is -inf), so they count as done too.
    """
    best_alive = jnp.max(state.alive_logprobs, axis=1)
    bound = best_alive / length_penalty(caps, alpha)
    return bound <= state.finished_scores[:, -1]


def _beam_step(
    state: BeamState,
    tokens_to_logits: TokensToLogits,
    constraints: processors.DecodeConstraints,
    alpha: float,
    bos_id: int,
) -> BeamState:
    ids = hypotheses.last_tokens(state.alive_seqs, state.step, bos_id)
    logits, cache = tokens_to_logits(ids, state.alive_cache)
    raw = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logprobs = processors.apply_constraints(constraints, raw, state.alive_seqs, state.step)
    batch, beam, vocab = logprobs.shape
    candidates = (state.alive_logprobs[..., None] + logprobs).reshape(batch, beam * vocab)

    # One pass over all candidates: at most `beam` of them are EOS (one per beam), so the best
    # 2 * beam hold the best `beam` non-EOS ones; both selections below are over this short list
    # (in score order, ties by index, exactly as a top_k over every candidate would give). The
    # barrier keeps XLA from folding the slices below into the top_k, which turns its fast TopK
    # call into a full sort on CPU.
    top_scores, top_index = jax.lax.optimization_barrier(
        top_k.top_k(candidates, min(2 * beam, beam * vocab))
    )
    top_is_eos = top_index % vocab == constraints.eos_id

    # Rows already done take no new finished hypotheses, so ties cannot displace kept ones.
    rows_done = _rows_done(state, constraints.caps, alpha)
    eos_scores = jnp.where(top_is_eos & ~rows_done[:, None], top_scores, -jnp.inf)[:, :beam]
    parents = top_index[:, :beam] // vocab
    state = _add_finished(state, eos_scores, parents, alpha, constraints.eos_id)

    alive_scores, alive_rank = jax.lax.top_k(jnp.where(top_is_eos, -jnp.inf, top_scores), beam)
    alive_index = jnp.take_along_axis(top_index, alive_rank, axis=1)
    parents = alive_index // vocab
    alive_seqs = hypotheses.gather_beams(state.alive_seqs, parents)
    return state.replace(
        step=state.step + 1,
        alive_seqs=hypotheses.write_tokens(alive_seqs, state.step, alive_index % vocab),
        alive_logprobs=alive_scores,
        alive_cache=hypotheses.gather_beams(cache, parents),
    )


def _add_finished(
    state: BeamState, logprobs: jax.Array, parents: jax.Array, alpha: float, eos_id: int
) -> BeamState:
    """Merges EOS-terminated candidates into the finished set, keeping the nbest best.

    Args:
        state: state before this step's token is written (`step` tokens generated).
        logprobs: `[batch, beam]` summed log-probs of the candidates, -inf for non-candidates.
        parents: `[batch, beam]` int32 alive beam each candidate extends.
        alpha: length-penalty exponent.
        eos_id: end-of-sequence id, written at position `step`.
    """
    length = state.step + 1
    new_seqs = hypotheses.gather_beams(state.alive_seqs, parents)
    new_seqs = hypotheses.write_tokens(new_seqs, state.step, jnp.full(parents.shape, eos_id))
    scores = jnp.concatenate([state.finished_scores, logprobs / length_penalty(length, alpha)], 1)
    seqs = jnp.concatenate([state.finished_seqs, new_seqs], axis=1)
    lengths = jnp.concatenate(
        [state.finished_lengths, jnp.full(parents.shape, length, jnp.int32)], axis=1
    )
    # Earlier finished hypotheses come first, so top_k keeps them on ties.
    kept_scores, kept = jax.lax.top_k(scores, state.finished_scores.shape[1])
    return state.replace(
        finished_seqs=hypotheses.gather_beams(seqs, kept),
        finished_scores=kept_scores,
        finished_lengths=hypotheses.gather_beams(lengths, kept),
    )


def _result(state: BeamState) -> DecodeResult:
    exists = state.finished_scores > -jnp.inf
    return DecodeResult(
        sequences=jnp.where(exists[..., None], state.finished_seqs, PAD_ID),
        scores=state.finished_scores,
        lengths=jnp.where(exists, state.finished_lengths, 0),
        steps=state.step,
    )
