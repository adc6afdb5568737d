"""Tests for s2s_jax.decoding.processors: each processor against hand or reference values."""

import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data.vocab import EOS_ID, PAD_ID
from s2s_jax.decoding import processors

VOCAB = 6


def _raw(batch: int = 2, beam: int = 2, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((batch, beam, VOCAB)), jnp.float32)


def _finite(logprobs) -> np.ndarray:
    return np.isfinite(np.asarray(logprobs))


@pytest.mark.parametrize(("step", "blocked"), [(0, True), (1, True), (2, False), (5, False)])
def test_block_eos_before_min_length(step, blocked):
    raw = _raw()
    out = np.asarray(processors.block_eos_before_min_length(raw, jnp.int32(step), 2, EOS_ID))
    assert np.all(np.isneginf(out[..., EOS_ID]) == blocked)
    others = [t for t in range(VOCAB) if t != EOS_ID]
    np.testing.assert_array_equal(out[..., others], np.asarray(raw)[..., others])


def _reference_banned(history: list[int], n: int) -> set[int]:
    """Tokens completing an n-gram that already occurs in `history` (plain Python)."""
    if len(history) < n:
        return set()
    context = tuple(history[len(history) - n + 1 :])
    return {
        history[j + n - 1]
        for j in range(len(history) - n + 1)
        if tuple(history[j : j + n - 1]) == context
    }


@pytest.mark.parametrize("n", [1, 2, 3])
def test_block_repeated_ngrams_matches_reference(n):
    # Tokens from {3, 4} only, so repeats are frequent; every step of every row is checked.
    rng = np.random.default_rng(n)
    max_length = 8
    sequences = rng.integers(3, 5, size=(3, 2, max_length)).astype(np.int32)
    raw = _raw(batch=3)
    for step in range(max_length):
        # Positions at and past `step` are not generated yet; PAD them as the loops do.
        seqs = np.where(np.arange(max_length) < step, sequences, PAD_ID)
        out = processors.block_repeated_ngrams(raw, jnp.asarray(seqs), jnp.int32(step), n)
        for row, beam in np.ndindex(3, 2):
            banned = _reference_banned(seqs[row, beam, :step].tolist(), n)
            expected = [t not in banned for t in range(VOCAB)]
            np.testing.assert_array_equal(_finite(out)[row, beam], expected)


def test_block_repeated_ngrams_hand_example():
    # History 3 4 3: the bigram (3, 4) exists and the context is 3, so 4 is banned.
    seqs = jnp.array([[[3, 4, 3, 0, 0]]], jnp.int32)
    out = processors.block_repeated_ngrams(_raw(1, 1), seqs, jnp.int32(3), 2)
    np.testing.assert_array_equal(np.flatnonzero(~_finite(out)[0, 0]), [4])


def test_block_repeated_ngrams_disabled_keeps_input():
    raw = _raw()
    seqs = jnp.full((2, 2, 4), 3, jnp.int32)
    out = processors.block_repeated_ngrams(raw, seqs, jnp.int32(3), 0)
    np.testing.assert_array_equal(out, raw)


def test_force_prefix_keeps_model_logprob_of_forced_token():
    raw = _raw(batch=3)
    blocked = raw.at[..., 4].set(-jnp.inf)  # earlier processors blocked token 4
    prefix = jnp.array([[4, 5], [3, PAD_ID], [PAD_ID, PAD_ID]], jnp.int32)
    lengths = jnp.array([2, 1, 0], jnp.int32)
    for step, active in [(0, [True, True, False]), (1, [True, False, False])]:
        out = np.asarray(processors.force_prefix(blocked, raw, jnp.int32(step), prefix, lengths))
        for row in range(3):
            if active[row]:
                token = int(prefix[row, step])
                assert np.flatnonzero(np.isfinite(out[row, 0])).tolist() == [token]
                np.testing.assert_array_equal(out[row, :, token], np.asarray(raw)[row, :, token])
            else:
                np.testing.assert_array_equal(out[row], np.asarray(blocked)[row])


def test_force_eos_at_cap():
    raw = _raw(batch=3)
    caps = jnp.array([1, 3, 4], jnp.int32)
    out = np.asarray(processors.force_eos_at_cap(raw, raw, jnp.int32(2), caps, EOS_ID))
    # Step 2 writes the third token: rows with cap <= 3 must end there.
    for row, forced in enumerate([True, True, False]):
        expected = [t == EOS_ID or not forced for t in range(VOCAB)]
        assert np.all(np.isfinite(out[row]) == expected)
        np.testing.assert_array_equal(out[row, :, EOS_ID], np.asarray(raw)[row, :, EOS_ID])


def test_apply_constraints_precedence():
    # Row 0: min_length blocks EOS but the prefix forces it. Row 1: the prefix wants token 3
    # but the cap of 1 forces EOS.
    constraints = processors.make_constraints(
        2,
        max_length=4,
        min_length=3,
        max_lengths=jnp.array([4, 1]),
        forced_prefix=jnp.array([[EOS_ID], [3]]),
    )
    raw = _raw()
    seqs = jnp.zeros((2, 2, 4), jnp.int32)
    out = np.asarray(processors.apply_constraints(constraints, raw, seqs, jnp.int32(0)))
    for row in range(2):
        assert np.flatnonzero(np.isfinite(out[row, 0])).tolist() == [EOS_ID]
        np.testing.assert_array_equal(out[row, :, EOS_ID], np.asarray(raw)[row, :, EOS_ID])


def test_make_constraints_derives_caps_and_prefix_lengths():
    constraints = processors.make_constraints(
        3,
        max_length=5,
        max_lengths=jnp.array([9, 0, 3]),
        forced_prefix=jnp.array([[3, 4, 0], [0, 4, 4], [5, 5, 5]]),
    )
    np.testing.assert_array_equal(constraints.caps, [5, 1, 3])  # clipped to [1, max_length]
    np.testing.assert_array_equal(constraints.prefix_lengths, [2, 0, 3])  # up to the first PAD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_length": 0}, "max_length"),
        ({"max_length": 3, "min_length": 3}, "min_length"),
        ({"max_length": 3, "no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"max_length": 3, "max_lengths": jnp.ones((3,), jnp.int32)}, "max_lengths"),
        ({"max_length": 3, "forced_prefix": jnp.ones((2,), jnp.int32)}, "forced_prefix"),
    ],
)
def test_make_constraints_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        processors.make_constraints(2, **kwargs)
