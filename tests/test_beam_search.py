"""Tests for s2s_jax.decoding.beam_search: golden tables, brute force, cache order, traces."""

import functools
import itertools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding import beam_search, greedy, length_penalty

A, B = 3, 4  # ordinary tokens of the hand-built tables
VOCAB = 5  # PAD, BOS, EOS, A, B

# float32 sums of at most max_length (<= 6) log-probs, each of magnitude < 20:
# accumulated rounding stays below 6 * 20 * 6e-8 ~ 1e-5.
SCORE_ATOL = 1e-5


def _log(probs) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    return np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), -np.inf)


def _dist(eos=0.0, a=0.0, b=0.0) -> np.ndarray:
    """Next-token probabilities over (PAD, BOS, EOS, A, B)."""
    return np.array([0.0, 0.0, eos, a, b])


def _step_prev_model(probs: np.ndarray):
    """A model whose next-token distribution is `probs[step, previous token]`.

    Args:
        probs: [max_length, vocab (previous), vocab (next)] probabilities.
    """
    table = jnp.asarray(_log(probs), jnp.float32)

    def tokens_to_logits(ids, cache):
        step = cache["step"]  # [batch, beam]
        return table[step, ids], {"step": step + 1}

    return tokens_to_logits


def _step_cache(batch: int = 1) -> dict:
    return {"step": jnp.zeros((batch, 1), jnp.int32)}


def _golden_probs(max_length: int = 3) -> np.ndarray:
    probs = np.zeros((max_length, VOCAB, VOCAB))
    probs[0, BOS_ID] = _dist(eos=0.1, a=0.5, b=0.4)
    probs[1, A] = _dist(eos=0.3, a=0.4, b=0.3)
    probs[1, B] = _dist(eos=0.9, a=0.05, b=0.05)
    probs[2:, A] = _dist(eos=0.5, a=0.25, b=0.25)
    probs[2:, B] = _dist(eos=0.6, a=0.2, b=0.2)
    return probs


def _run(model, cache, **kwargs):
    arrays = {k: kwargs.pop(k) for k in ("max_lengths", "forced_prefix") if k in kwargs}
    static = {k: kwargs.pop(k) for k in ("beam_size", "max_length", "nbest") if k in kwargs}

    @functools.partial(jax.jit, static_argnums=0)
    def run(model, cache, arrays):
        return beam_search(model, cache, **static, **kwargs, **arrays)

    return jax.device_get(run(model, cache, arrays))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_golden_table_nbest(alpha):
    # Beam 2 keeps {A: .5, B: .4}; step 1 finishes B EOS (.36, rank 1); step 2 forces EOS on
    # the alive A A (.2 * .5 = .1) and A B (.15 * .6 = .09).
    result = _run(
        _step_prev_model(_golden_probs()), _step_cache(), beam_size=2, max_length=3,
        nbest=2, alpha=alpha,
    )  # fmt: skip
    np.testing.assert_array_equal(result.sequences[0], [[B, EOS_ID, PAD_ID], [A, A, EOS_ID]])
    np.testing.assert_array_equal(result.lengths[0], [2, 3])
    expected = [math.log(0.36) / (7 / 6) ** alpha, math.log(0.1) / (8 / 6) ** alpha]
    np.testing.assert_allclose(result.scores[0], expected, atol=SCORE_ATOL)
    assert result.steps == 3


def test_golden_table_stops_once_nbest_cannot_improve():
    # With nbest 1 the finished B EOS (.36) beats the best alive A A (.2) after step 1.
    result = _run(
        _step_prev_model(_golden_probs(max_length=8)), _step_cache(), beam_size=2,
        max_length=8, alpha=0.0,
    )  # fmt: skip
    np.testing.assert_array_equal(result.sequences[0, 0, :3], [B, EOS_ID, PAD_ID])
    np.testing.assert_allclose(result.scores[0, 0], math.log(0.36), atol=SCORE_ATOL)
    assert result.steps == 2


def test_early_stop_bound_uses_longest_reachable_length():
    # [EOS] finishes at step 0 with score log .55 = -0.598. The alive [A] has log-prob
    # log .45 = -0.799: dividing it by the penalty of the next length (7/6) gives -0.684, which
    # would wrongly stop; the penalty of the cap (11/6) gives -0.436, so the search goes on and
    # A A A A A EOS (score -1.026 / (11/6) = -0.560) wins with alpha 1.
    probs = np.zeros((6, VOCAB, VOCAB))
    probs[0, BOS_ID] = _dist(eos=0.55, a=0.45)
    probs[1:5, :] = _dist(eos=0.02, a=0.97, b=0.01)
    probs[5, :] = _dist(eos=0.9, a=0.05, b=0.05)
    result = _run(_step_prev_model(probs), _step_cache(), beam_size=2, max_length=6, alpha=1.0)
    np.testing.assert_array_equal(result.sequences[0, 0], [A, A, A, A, A, EOS_ID])
    logprob = math.log(0.45) + 4 * math.log(0.97) + math.log(0.9)
    np.testing.assert_allclose(result.scores[0, 0], logprob / (11 / 6), atol=SCORE_ATOL)


# Brute force: a model whose logits depend on the whole prefix, held in the cache.
BF_VOCAB = 6  # PAD, BOS (never generated), EOS and three ordinary tokens
BF_LENGTH = 4
BF_BATCH = 3


def _prefix_code(prefix) -> int:
    return sum((tok + 1) * (BF_VOCAB + 1) ** i for i, tok in enumerate(prefix))


def _prefix_table(seed: int) -> np.ndarray:
    """[batch, codes, vocab] float32 logits; PAD and BOS are -inf."""
    rng = np.random.default_rng(seed)
    table = 2.0 * rng.standard_normal((BF_BATCH, (BF_VOCAB + 1) ** BF_LENGTH, BF_VOCAB))
    table[..., [PAD_ID, BOS_ID]] = -np.inf
    return table.astype(np.float32)


def _prefix_model(table: np.ndarray, on_call=None):
    """Looks logits up by (row, generated prefix); the prefix lives in the cache.

    `on_call(step, history)` (optional) receives the histories fed to every call.
    """
    table = jnp.asarray(table)
    weights = (BF_VOCAB + 1) ** jnp.arange(BF_LENGTH - 1)

    def tokens_to_logits(ids, cache):
        step, history = cache["step"], cache["history"]  # [batch, beam], [batch, beam, length]
        history = jnp.where(jnp.arange(BF_LENGTH) == step[..., None], ids[..., None], history)
        generated = history[..., 1:]  # position 0 holds BOS
        in_prefix = jnp.arange(1, BF_LENGTH) <= step[..., None]
        code = jnp.sum(jnp.where(in_prefix, (generated + 1) * weights, 0), axis=-1)
        if on_call is not None:
            jax.debug.callback(on_call, step, history)
        logits = table[jnp.arange(table.shape[0])[:, None], code]
        return logits, {"step": step + 1, "history": history}

    return tokens_to_logits


def _prefix_cache(batch: int = BF_BATCH) -> dict:
    return {
        "step": jnp.zeros((batch, 1), jnp.int32),
        "history": jnp.zeros((batch, 1, BF_LENGTH), jnp.int32),
    }


def _completes_repeat(prefix: tuple, token: int, n: int) -> bool:
    if n == 0 or len(prefix) < n:
        return False
    ngram = prefix[len(prefix) - n + 1 :] + (token,)
    return any(prefix[j : j + n] == ngram for j in range(len(prefix) - n + 1))


def _allowed(prefix, raw, cap, min_length, ngram, forced):
    """Tokens the constraints allow after `prefix` (a forced prefix and the cap override)."""
    t = len(prefix)
    if t + 1 >= cap:
        return [EOS_ID]
    if t < len(forced):
        return [forced[t]]
    tokens = [x for x in range(BF_VOCAB) if np.isfinite(raw[x]) and x != EOS_ID]
    tokens = [x for x in tokens if not _completes_repeat(prefix, x, ngram)]
    return tokens + ([EOS_ID] if t >= min_length else [])


def _enumerate(table_row, *, cap, alpha, min_length=0, ngram=0, forced=()):
    """All finished sequences of one row with their scores, best first."""
    logsoftmax = np.asarray(jax.nn.log_softmax(jnp.asarray(table_row), axis=-1), np.float64)
    finished = []

    def visit(prefix, logprob):
        raw = logsoftmax[_prefix_code(prefix)]
        for token in _allowed(prefix, raw, cap, min_length, ngram, forced):
            total = logprob + raw[token]
            if token == EOS_ID:
                penalty = ((5 + len(prefix) + 1) / 6) ** alpha
                finished.append((prefix + (EOS_ID,), total / penalty))
            elif np.isfinite(total):
                visit(prefix + (token,), total)

    visit((), 0.0)
    return sorted(finished, key=lambda item: -item[1])


BRUTE_FORCE_VARIANTS = {
    "plain": {},
    "min_length": {"min_length": 2},
    "ngram1": {"no_repeat_ngram_size": 1},
    "ngram2": {"no_repeat_ngram_size": 2},
    "max_lengths": {"max_lengths": [4, 2, 3]},
    "forced_prefix": {"forced_prefix": [[3, 0], [4, 5], [0, 0]]},
}


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("variant", sorted(BRUTE_FORCE_VARIANTS))
def test_wide_beam_matches_brute_force(variant, alpha):
    options = BRUTE_FORCE_VARIANTS[variant]
    table = _prefix_table(seed=len(variant))
    nbest = 8
    kwargs = {k: jnp.asarray(v, jnp.int32) for k, v in options.items() if isinstance(v, list)}
    kwargs.update({k: v for k, v in options.items() if not isinstance(v, list)})
    # 40 >= every step's finite candidates (at most 9 alive prefixes x 4 tokens), so nothing
    # is pruned and the search is exhaustive.
    result = _run(
        _prefix_model(table), _prefix_cache(), beam_size=40, max_length=BF_LENGTH,
        nbest=nbest, alpha=alpha, **kwargs,
    )  # fmt: skip
    for row in range(BF_BATCH):
        forced = tuple(itertools.takewhile(bool, options.get("forced_prefix", [[]] * 3)[row]))
        expected = _enumerate(
            table[row],
            cap=options.get("max_lengths", [BF_LENGTH] * 3)[row],
            alpha=alpha,
            min_length=options.get("min_length", 0),
            ngram=options.get("no_repeat_ngram_size", 0),
            forced=forced,
        )[:nbest]
        for i, (sequence, score) in enumerate(expected):
            assert tuple(result.sequences[row, i, : len(sequence)]) == sequence
            assert np.all(result.sequences[row, i, len(sequence) :] == PAD_ID)
            assert result.lengths[row, i] == len(sequence)
            np.testing.assert_allclose(result.scores[row, i], score, atol=SCORE_ATOL)
        # Slots beyond the hypotheses that exist are empty.
        assert np.all(result.scores[row, len(expected) :] == -np.inf)
        assert np.all(result.lengths[row, len(expected) :] == 0)


def test_cache_reordering_follows_hypotheses():
    calls = []
    model = _prefix_model(_prefix_table(seed=7), on_call=lambda s, h: calls.append((s, h)))
    result = _run(model, _prefix_cache(), beam_size=3, max_length=BF_LENGTH, nbest=3)
    # Generated prefixes (rows of the cache history) fed to the model at each step.
    fed = set()
    for step, history in calls:
        step, history = np.asarray(step), np.asarray(history)
        assert np.all(history[..., 0] == BOS_ID)
        for row, beam in np.ndindex(step.shape):
            s = step[row, beam]
            fed.add((row, tuple(history[row, beam, 1 : s + 1])))
    # Each returned hypothesis got its EOS from a call whose cache held exactly its prefix.
    for row, i in np.ndindex(result.lengths.shape):
        prefix = tuple(result.sequences[row, i, : result.lengths[row, i] - 1])
        assert (row, prefix) in fed


@pytest.mark.parametrize(
    "options",
    [{}, {"min_length": 2}, {"no_repeat_ngram_size": 1}, {"max_lengths": [1, 3, 2]}],
    ids=["plain", "min_length", "ngram", "max_lengths"],
)
def test_beam_one_alpha_zero_equals_greedy(options):
    options = {k: jnp.asarray(v) if isinstance(v, list) else v for k, v in options.items()}
    model = _prefix_model(_prefix_table(seed=3))
    beam = _run(model, _prefix_cache(), beam_size=1, max_length=BF_LENGTH, alpha=0.0, **options)
    best = jax.jit(lambda c: greedy(model, c, max_length=BF_LENGTH, **options))(_prefix_cache())
    np.testing.assert_array_equal(beam.sequences, best.sequences)
    np.testing.assert_array_equal(beam.lengths, best.lengths)
    # Both sum the same float32 log-probs in the same order.
    np.testing.assert_allclose(beam.scores, best.scores, atol=SCORE_ATOL)


def test_min_length_and_ngram_block_hold_on_returned_hypotheses():
    # The model wants EOS first and then A forever; the constraints must override both.
    probs = np.zeros((6, VOCAB, VOCAB))
    probs[:] = _dist(eos=0.6, a=0.35, b=0.05)
    result = _run(
        _step_prev_model(probs), _step_cache(), beam_size=3, max_length=6, nbest=3,
        min_length=2, no_repeat_ngram_size=2,
    )  # fmt: skip
    for sequence, length in zip(result.sequences[0], result.lengths[0], strict=True):
        tokens = tuple(sequence[:length])
        assert length >= 3 and tokens[-1] == EOS_ID and EOS_ID not in tokens[:-1]
        bigrams = list(zip(tokens[:-1], tokens[1:], strict=True))
        assert len(bigrams) == len(set(bigrams))


def test_forced_prefix_and_row_caps():
    probs = np.zeros((5, VOCAB, VOCAB))
    probs[:] = _dist(eos=0.5, a=0.3, b=0.2)
    prefix = jnp.array([[B, B, B], [A, PAD_ID, PAD_ID], [PAD_ID] * 3], jnp.int32)
    result = _run(
        _step_prev_model(probs), _step_cache(3), beam_size=2, max_length=5, nbest=2,
        forced_prefix=prefix, max_lengths=jnp.array([5, 5, 1], jnp.int32), alpha=0.0,
    )  # fmt: skip
    # Row 0 can only finish after B B B; its best is B B B EOS, then B B B A EOS.
    np.testing.assert_array_equal(
        result.sequences[0, :, :5], [[B, B, B, EOS_ID, 0], [B, B, B, A, EOS_ID]]
    )
    np.testing.assert_allclose(
        result.scores[0],
        [3 * math.log(0.2) + math.log(0.5), 3 * math.log(0.2) + math.log(0.3 * 0.5)],
        atol=SCORE_ATOL,
    )
    np.testing.assert_array_equal(result.sequences[1, 0, :2], [A, EOS_ID])
    # Row 2 is capped at one token: EOS is forced and only one hypothesis exists.
    np.testing.assert_array_equal(result.lengths[2], [1, 0])
    np.testing.assert_allclose(result.scores[2, 0], math.log(0.5), atol=SCORE_ATOL)


def test_same_shapes_trace_once():
    chex.clear_trace_counter()
    model = _prefix_model(_prefix_table(seed=1))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def decode(cache, max_lengths):
        return beam_search(model, cache, beam_size=2, max_length=BF_LENGTH, max_lengths=max_lengths)

    decode(_prefix_cache(), jnp.array([4, 3, 2], jnp.int32))
    # A second trace would raise inside chex; new values must reuse the compiled loop.
    second = decode(_prefix_cache(), jnp.array([2, 2, 1], jnp.int32))
    assert np.all(np.asarray(second.lengths) <= np.array([[2], [2], [1]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beam_size": 2, "nbest": 3}, "nbest"),
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 2, "alpha": -1.0}, "alpha"),
        ({"beam_size": 2, "min_length": 4}, "min_length"),
        ({"beam_size": 2, "forced_prefix": jnp.zeros((2, 1), jnp.int32)}, "forced_prefix"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        beam_search(_prefix_model(_prefix_table(0)), _prefix_cache(), max_length=4, **kwargs)


def test_cache_must_be_beam_one():
    cache = {"step": jnp.zeros((3, 2), jnp.int32)}
    with pytest.raises(ValueError, match=r"\[batch, 1\]"):
        beam_search(_step_prev_model(_golden_probs()), cache, beam_size=2, max_length=3)


def test_length_penalty_values():
    np.testing.assert_allclose(length_penalty(jnp.array([1, 7]), 0.6), [1.0, 2.0**0.6], rtol=1e-6)
    np.testing.assert_array_equal(length_penalty(jnp.array([3, 9]), 0.0), [1.0, 1.0])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the XLA CPU lowering")
def test_candidate_selection_compiles_to_top_k_not_a_full_sort():
    # A top_k whose outputs XLA sees sliced twice becomes a sort of every (beam, token)
    # candidate on CPU: ~10x slower decoding at a realistic vocabulary (see _beam_step).
    vocab, batch, beam = 1000, 2, 4

    def tokens_to_logits(ids, cache):
        logits = jnp.sin(ids[..., None] * 0.37 + jnp.arange(vocab) * 0.11)
        return logits, cache

    def decode(cache):
        return beam_search(tokens_to_logits, cache, beam_size=beam, max_length=4)

    hlo = jax.jit(decode).lower(_step_cache(batch)).compile().as_text()
    assert 'custom_call_target="TopK"' in hlo
    # The only sorts allowed are of a few ids per row (top_k.top_k orders its kept blocks).
    sorted_shapes = re.findall(r"= \w+\[([\d,]+)\]\S* sort\(", hlo)
    assert all(int(shape.split(",")[-1]) <= 2 * beam for shape in sorted_shapes), sorted_shapes
