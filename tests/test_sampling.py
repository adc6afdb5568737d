"""Tests for s2s_jax.decoding.sampling: greedy, temperature / top-k / top-p sampling."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding import greedy, sample, top_k_filter, top_p_filter

A, B, C = 3, 4, 5  # ordinary tokens
VOCAB = 6  # PAD, BOS, EOS, A, B, C

# float32 sums of at most 6 log-probs of magnitude < 20: rounding stays below 1e-5.
SCORE_ATOL = 1e-5


def _table_model(logits: np.ndarray):
    """A model whose logits are `logits[step, previous token]` ([length, vocab, vocab])."""
    table = jnp.asarray(logits, jnp.float32)

    def tokens_to_logits(ids, cache):
        step = cache["step"]  # [batch, 1]
        return table[step, ids], {"step": step + 1}

    return tokens_to_logits


def _cache(batch: int) -> dict:
    return {"step": jnp.zeros((batch, 1), jnp.int32)}


def _random_logits(seed: int, length: int) -> np.ndarray:
    """[length, vocab, vocab] random logits; PAD and BOS are never generated."""
    logits = 2.0 * np.random.default_rng(seed).standard_normal((length, VOCAB, VOCAB))
    logits[..., [PAD_ID, BOS_ID]] = -np.inf
    return logits.astype(np.float32)


def _model_logprob(logits: np.ndarray, sequence) -> float:
    """Summed log-probs of `sequence` under the unmodified model (float64)."""
    logprobs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1), np.float64)
    previous, total = BOS_ID, 0.0
    for step, token in enumerate(sequence):
        total += logprobs[step, previous, token]
        previous = token
    return total


@functools.partial(jax.jit, static_argnums=0, static_argnames=("max_length", "options"))
def _greedy(model, cache, *, max_length, options=()):
    return greedy(model, cache, max_length=max_length, **dict(options))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("max_length", "options"))
def _sample(model, cache, rng, *, max_length, options=()):
    return sample(model, cache, rng=rng, max_length=max_length, **dict(options))


def test_greedy_golden_and_early_stop():
    probs = np.zeros((8, VOCAB, VOCAB))
    probs[0, BOS_ID] = [0, 0, 0.1, 0.5, 0.4, 0]
    probs[1, A] = [0, 0, 0.3, 0.4, 0.3, 0]
    probs[2:, A] = [0, 0, 0.5, 0.25, 0.25, 0]
    with np.errstate(divide="ignore"):
        model = _table_model(np.log(probs))
    result = jax.device_get(_greedy(model, _cache(1), max_length=8))
    np.testing.assert_array_equal(result.sequences[0, 0], [A, A, EOS_ID, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(result.scores[0, 0], math.log(0.5 * 0.4 * 0.5), atol=SCORE_ATOL)
    assert result.lengths[0, 0] == 3
    assert result.steps == 3  # stopped once the only row finished, not at max_length 8


@pytest.mark.parametrize("options", [(), (("temperature", 0.7), ("top_k", 3), ("top_p", 0.9))])
def test_sample_scores_are_unmodified_model_logprobs(options):
    logits = _random_logits(seed=0, length=5)
    result = jax.device_get(
        _sample(_table_model(logits), _cache(16), jax.random.key(0), max_length=5, options=options)
    )
    for row in range(16):
        length = result.lengths[row, 0]
        sequence = result.sequences[row, 0]
        assert sequence[length - 1] == EOS_ID and EOS_ID not in sequence[: length - 1]
        assert np.all(sequence[length:] == PAD_ID)
        expected = _model_logprob(logits, sequence[:length])
        np.testing.assert_allclose(result.scores[row, 0], expected, atol=SCORE_ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_one_and_temperature_zero_equal_greedy(seed):
    model = _table_model(_random_logits(seed=seed, length=6))
    best = _greedy(model, _cache(4), max_length=6)
    for options in [(("top_k", 1),), (("temperature", 0.0),)]:
        drawn = _sample(model, _cache(4), jax.random.key(seed), max_length=6, options=options)
        np.testing.assert_array_equal(drawn.sequences, best.sequences)
        np.testing.assert_allclose(drawn.scores, best.scores, atol=SCORE_ATOL)


def _first_token_model(first_logits):
    """First token from `first_logits` (EOS excluded); a max_length of 2 then forces EOS."""
    logits = np.zeros((2, VOCAB, VOCAB), np.float32)
    logits[0, BOS_ID] = first_logits
    return _table_model(logits)


FIRST_LOGITS = np.array([-np.inf, -np.inf, -np.inf, 1.0, 0.0, -1.0], np.float32)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_frequencies_match_softmax(temperature):
    rows = 20_000
    result = _sample(
        _first_token_model(FIRST_LOGITS), _cache(rows), jax.random.key(42), max_length=2,
        options=(("temperature", temperature),),
    )  # fmt: skip
    first = np.asarray(result.sequences[:, 0, 0])
    frequencies = np.bincount(first, minlength=VOCAB)[A:] / rows
    expected = np.asarray(jax.nn.softmax(jnp.asarray(FIRST_LOGITS[A:]) / temperature))
    # A frequency's standard error is at most sqrt(0.25 / 20000) = 0.0035; 0.015 is > 4 SE.
    np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_same_rng_same_samples_and_new_rng_new_samples():
    model = _table_model(_random_logits(seed=5, length=6))
    first = _sample(model, _cache(64), jax.random.key(7), max_length=6)
    again = _sample(model, _cache(64), jax.random.key(7), max_length=6)
    other = _sample(model, _cache(64), jax.random.key(8), max_length=6)
    np.testing.assert_array_equal(first.sequences, again.sequences)
    np.testing.assert_array_equal(first.scores, again.scores)
    # 64 rows of up to 6 draws each: identical outputs under another key would be a bug.
    assert not np.array_equal(first.sequences, other.sequences)


@pytest.mark.parametrize(
    ("p", "kept"),
    [(0.45, [1]), (0.79, [1, 3]), (0.9, [1, 2, 3]), (0.99, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_filter_keeps_smallest_set_with_mass_p(p, kept):
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
    filtered = np.asarray(top_p_filter(logits, p))
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(filtered[0])), kept)
    np.testing.assert_array_equal(filtered[0, kept], np.asarray(logits)[0, kept])


@pytest.mark.parametrize(
    ("k", "kept"), [(0, [0, 1, 2, 3]), (1, [1]), (2, [1, 2]), (4, [0, 1, 2, 3])]
)
def test_top_k_filter_keeps_k_largest(k, kept):
    filtered = np.asarray(top_k_filter(jnp.array([[1.0, 3.0, 2.0, 0.0]]), k))
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(filtered[0])), kept)


def test_top_p_sampling_draws_only_from_nucleus():
    # Probabilities of A, B, C: .665, .245, .090; the 0.8 nucleus is {A, B}.
    rows = 2_000
    result = _sample(
        _first_token_model(FIRST_LOGITS), _cache(rows), jax.random.key(3), max_length=2,
        options=(("top_p", 0.8),),
    )  # fmt: skip
    assert set(np.unique(np.asarray(result.sequences[:, 0, 0]))) == {A, B}


def test_sampling_honours_shared_constraints():
    logits = _random_logits(seed=9, length=6)
    logits[..., EOS_ID] = 20.0  # the model would stop at once
    options = (
        ("min_length", 2),
        ("no_repeat_ngram_size", 1),
        ("forced_prefix", jnp.array([[C], [PAD_ID], [PAD_ID]], jnp.int32)),
        ("max_lengths", jnp.array([6, 6, 2], jnp.int32)),
    )
    result = jax.device_get(
        sample(
            _table_model(logits), _cache(3), rng=jax.random.key(0), max_length=6, **dict(options)
        )
    )
    np.testing.assert_array_equal(result.lengths[:, 0], [3, 3, 2])
    assert result.sequences[0, 0, 0] == C
    for row in range(3):
        tokens = result.sequences[row, 0, : result.lengths[row, 0] - 1]
        assert len(set(tokens.tolist())) == len(tokens) and EOS_ID not in tokens


def test_same_shapes_trace_once():
    chex.clear_trace_counter()
    model = _table_model(_random_logits(seed=4, length=4))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def decode(cache, rng):
        return sample(model, cache, rng=rng, max_length=4, top_k=3)

    decode(_cache(2), jax.random.key(0))
    # A second trace would raise inside chex.
    result = decode(_cache(2), jax.random.key(1))
    assert np.all(np.asarray(result.lengths) >= 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_p": 0.0}, "top_p")],
)
def test_bad_options_raise(kwargs, message):
    model = _table_model(_random_logits(seed=0, length=3))
    with pytest.raises(ValueError, match=message):
        sample(model, _cache(1), rng=jax.random.key(0), max_length=3, **kwargs)
