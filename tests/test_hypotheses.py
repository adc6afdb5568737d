"""Tests for s2s_jax.decoding.hypotheses: cache tiling and reordering, token bookkeeping."""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data.vocab import BOS_ID
from s2s_jax.decoding import hypotheses


def _cache():
    return {
        "h": jnp.arange(2 * 1 * 3, dtype=jnp.float32).reshape(2, 1, 3),
        "pos": jnp.array([[5], [7]], jnp.int32),
    }


def test_cache_batch_size_and_tile():
    cache = _cache()
    assert hypotheses.cache_batch_size(cache) == 2
    tiled = hypotheses.tile_beams(cache, 4)
    assert tiled["h"].shape == (2, 4, 3) and tiled["pos"].shape == (2, 4)
    np.testing.assert_array_equal(tiled["h"][:, 3], cache["h"][:, 0])
    np.testing.assert_array_equal(tiled["pos"], [[5] * 4, [7] * 4])


@pytest.mark.parametrize(
    "cache",
    [{}, {"h": jnp.zeros((2, 3, 4))}, {"a": jnp.zeros((2, 1)), "b": jnp.zeros((3, 1))}],
    ids=["empty", "beam3", "batch_mismatch"],
)
def test_cache_batch_size_rejects_bad_caches(cache):
    with pytest.raises(ValueError, match="cache"):
        hypotheses.cache_batch_size(cache)


def test_gather_beams_selects_parents_per_row():
    tree = {"x": jnp.array([[[0, 0], [1, 1], [2, 2]], [[10, 10], [11, 11], [12, 12]]])}
    parents = jnp.array([[2, 2, 0], [1, 0, 0]])
    out = hypotheses.gather_beams(tree, parents)
    np.testing.assert_array_equal(out["x"][..., 0], [[2, 2, 0], [11, 10, 10]])


@flax.struct.dataclass
class _History:
    """A `ManagesBeams` node: a beam-free buffer plus the row table that follows reorders."""

    buffer: jax.Array  # [batch, 7], no beam axis at all
    rows: jax.Array  # [batch, beam]

    def tile_beams(self, beam_size):
        return self.replace(rows=jnp.repeat(self.rows, beam_size, axis=1))

    def reorder_beams(self, parents):
        return self.replace(rows=jnp.take_along_axis(self.rows, parents, axis=1))


def test_nodes_that_manage_beams_tile_and_reorder_themselves():
    node = _History(buffer=jnp.zeros((2, 7)), rows=jnp.array([[3], [4]]))
    assert isinstance(node, hypotheses.ManagesBeams)
    cache = {**_cache(), "history": node}
    assert hypotheses.cache_batch_size(cache) == 2  # the node's [2, 7] leaf is not checked
    tiled = hypotheses.tile_beams(cache, 3)
    assert tiled["history"].buffer.shape == (2, 7) and tiled["h"].shape == (2, 3, 3)
    tiled = tiled | {"history": node.replace(rows=jnp.array([[0, 1, 2], [3, 4, 5]]))}
    out = hypotheses.gather_beams(tiled, jnp.array([[2, 2, 0], [1, 0, 0]]))
    np.testing.assert_array_equal(out["history"].rows, [[2, 2, 0], [4, 3, 3]])
    np.testing.assert_array_equal(out["pos"], [[5] * 3, [7] * 3])
    with pytest.raises(ValueError, match="no \\[batch, 1, ...\\] array leaves"):
        hypotheses.cache_batch_size({"history": node})


def test_last_and_write_tokens():
    seqs = jnp.zeros((1, 2, 4), jnp.int32)
    np.testing.assert_array_equal(hypotheses.last_tokens(seqs, jnp.int32(0), BOS_ID), [[1, 1]])
    seqs = hypotheses.write_tokens(seqs, jnp.int32(0), jnp.array([[5, 6]]))
    seqs = hypotheses.write_tokens(seqs, jnp.int32(1), jnp.array([[7, 8]]))
    np.testing.assert_array_equal(seqs, [[[5, 7, 0, 0], [6, 8, 0, 0]]])
    np.testing.assert_array_equal(hypotheses.last_tokens(seqs, jnp.int32(2), BOS_ID), [[7, 8]])
