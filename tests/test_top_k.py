"""Tests for s2s_jax.decoding.top_k: the same arrays as lax.top_k, ties and -inf included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import top_k


def _rows(kind: str, rows: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(n + rows)
    if kind == "normal":
        return rng.normal(size=(rows, n)).astype(np.float32)
    if kind == "ties":  # a handful of distinct values: every selection is decided by ties
        return rng.integers(0, 3, size=(rows, n)).astype(np.float32)
    if kind == "mostly_-inf":  # masked scores: fewer finite values than winners in some rows
        x = rng.normal(size=(rows, n)).astype(np.float32)
        x[rng.random((rows, n)) < 0.999] = -np.inf
        x[0] = -np.inf
        return x
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["normal", "ties", "mostly_-inf"])
@pytest.mark.parametrize("n", [32000, 4100, 1000])  # 4100: the last block is padded
@pytest.mark.parametrize("k", [1, 8])
def test_matches_lax_top_k_exactly(kind, n, k):
    scores = jnp.asarray(_rows(kind, 5, n))
    values, index = jax.jit(top_k.top_k, static_argnums=(1, 2))(scores, k, 32)
    want_values, want_index = jax.lax.top_k(scores, k)
    assert index.dtype == jnp.int32 and values.shape == index.shape == (5, k)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(values, want_values)


def test_ties_across_blocks_go_to_the_lower_index():
    # The two best blocks tie on their maximum; the winner order must follow the index, not the
    # order in which the blocks were ranked.
    scores = np.zeros((1, 64 * 32), np.float32)
    scores[0, [1900, 5, 700, 37]] = [2.0, 2.0, 2.0, 1.0]
    values, index = top_k.top_k(jnp.asarray(scores), 4, block=32)
    np.testing.assert_array_equal(index, [[5, 700, 1900, 37]])
    np.testing.assert_array_equal(values, [[2.0, 2.0, 2.0, 1.0]])


def test_short_rows_use_lax_top_k_directly():
    hlo = jax.jit(lambda x: top_k.top_k(x, 8, 128)).lower(jnp.zeros((2, 1000))).as_text()
    assert hlo.count("top_k") == 1  # 8 blocks < 4 * k: no block pass
    hlo = jax.jit(lambda x: top_k.top_k(x, 8, 128)).lower(jnp.zeros((2, 32000))).as_text()
    assert hlo.count("top_k") == 2  # block maxima, then the kept blocks
