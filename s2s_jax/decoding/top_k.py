"""Exact `lax.top_k` over long rows, in two short passes.

Beam search picks its candidates from every (beam, token) pair of a row: tens of thousands of
scores for a few winners. XLA's CPU TopK reads every element in one serial pass; here one
fused reduction finds each block's maximum, the `k` best blocks are kept, and `lax.top_k`
runs over their `k * block` elements only (about 3x faster for 32,000 scores and k = 8).

The result is `lax.top_k`'s exactly, ties and -inf included. Order elements by (value
descending, index ascending), as `lax.top_k` does; the top k form a prefix of that order. The
first element of a block in that order is its maximum with the lowest index, and blocks ranked
by (maximum descending, block index ascending) are ranked by those first elements. Every
top-k element lies in a block whose first element is also in the top k (it comes no later),
and at most k - 1 other blocks' first elements come before it, so its block is among the k
best. The kept blocks are laid out in index order, so the second `lax.top_k`, which breaks ties
by position, breaks them by index as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Elements per block: wide enough that the block maxima are one cheap pass, narrow enough that
# the kept blocks are few elements. 64-256 measured alike at beam 4 x 8,000 tokens.
BLOCK = 128


def top_k(scores: jax.Array, k: int, block: int = BLOCK) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k(scores, k)` over the last axis of a `[rows, n]` array, by block maxima.

    Args:
        scores: `[rows, n]` float.
        k: static, how many to keep (<= n).
        block: static, elements per block.

    Returns:
        `(values [rows, k], indices [rows, k] int32)`, best first, ties by lower index: the
        same arrays as `lax.top_k`. Rows shorter than a few blocks per winner go straight to
        `lax.top_k`.
    """
    rows, n = scores.shape
    blocks = -(-n // block)
    if blocks < 4 * k:  # too few blocks for the two passes to pay off
        return jax.lax.top_k(scores, k)
    if blocks * block != n:  # pad with -inf at the end: last in every tie, never needed
        scores = jnp.pad(scores, ((0, 0), (0, blocks * block - n)), constant_values=-jnp.inf)
    by_block = scores.reshape(rows, blocks, block)
    _, best_blocks = jax.lax.top_k(jnp.max(by_block, axis=2), k)
    kept = jnp.sort(best_blocks, axis=1)  # the same blocks in index order (a sort of k ids)
    candidates = jnp.take_along_axis(by_block, kept[:, :, None], axis=1).reshape(rows, -1)
    values, position = jax.lax.top_k(candidates, k)
    index = jnp.take_along_axis(kept, position // block, axis=1) * block + position % block
    return values, index.astype(jnp.int32)
