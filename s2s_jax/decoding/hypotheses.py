"""Hypothesis bookkeeping shared by beam search and sampling.

Both decoding loops hold their hypotheses as `[batch, beam, ...]` arrays (sampling uses beam 1),
so tiling the caller's cache, reordering it after a beam step, reading the previous token and
writing the next one are the same operations for every loop.

A cache leaf is `[batch, beam, ...]` and is reordered by gathering along axis 1, unless it
sits in a node that manages its own beam axis (`ManagesBeams`, e.g. a self-attention history
that only records which row holds each hypothesis' past, so reordering never copies buffers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import flax.struct
import jax
import jax.numpy as jnp

# `tokens_to_logits(ids, cache) -> (logits, cache)`: ids [batch, beam] int32, every cache leaf
# [batch, beam, ...], logits [batch, beam, vocab] float32 (unnormalised).
TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


@flax.struct.dataclass
class DecodeResult:
    """What every decoding function returns; hypotheses of a row are sorted best first.

    Slots for which no hypothesis exists (e.g. nbest larger than the number of distinct
    hypotheses the constraints allow) have score -inf, PAD sequences and length 0.
    """

    sequences: jax.Array  # [batch, nbest, max_length] int32, EOS included, then PAD
    scores: jax.Array  # [batch, nbest] float32
    lengths: jax.Array  # [batch, nbest] int32, tokens incl. EOS
    steps: jax.Array  # [] int32, loop iterations run (model calls); < max_length on early stop


@runtime_checkable
class ManagesBeams(Protocol):
    """A cache node that lays out and reorders its own beam axis.

    Decoding tiles such a node with `tile_beams` once and calls `reorder_beams` after every
    beam step instead of gathering its leaves, which may then have any layout.
    """

    def tile_beams(self, beam_size: int) -> Any:
        """The node for `beam_size` hypotheses per row, all equal to the beam-1 one."""

    def reorder_beams(self, parents: jax.Array) -> Any:
        """The node after hypothesis `i` of each row became a copy of hypothesis `parents[b, i]`
        (`parents`: `[batch, beam]` int32)."""


def _manages_beams(node: Any) -> bool:
    return isinstance(node, ManagesBeams)


def cache_batch_size(cache: Any) -> int:
    """Returns the batch size of a beam-1 cache after checking every leaf is `[batch, 1, ...]`.

    Leaves inside `ManagesBeams` nodes are not checked (their layout is their own).

    Raises:
        ValueError: the cache has no such array leaves, or a leaf does not have the
            `[batch, 1, ...]` leading shape, or leaves disagree on the batch size.
    """
    nodes = jax.tree_util.tree_leaves(cache, is_leaf=_manages_beams)
    leaves = [leaf for leaf in nodes if not _manages_beams(leaf)]
    if not leaves:
        raise ValueError(
            "the decoding cache has no [batch, 1, ...] array leaves, so the batch size is "
            "unknown; give it at least one (e.g. a per-row step counter)."
        )
    batch = leaves[0].shape[0] if leaves[0].ndim else None
    for leaf in leaves:
        if leaf.ndim < 2 or leaf.shape[0] != batch or leaf.shape[1] != 1:
            raise ValueError(
                f"every cache leaf must have leading dims [batch, 1] (beam 1) with one batch "
                f"size; got a leaf of shape {leaf.shape} (batch of the first leaf: {batch}). "
                "Build the cache for beam 1; decoding tiles it to the beam size."
            )
    return batch


def tile_beams(cache: Any, beam_size: int) -> Any:
    """Repeats every cache leaf along the beam axis: `[batch, 1, ...] -> [batch, beam, ...]`
    (`ManagesBeams` nodes tile themselves)."""

    def tile(node: Any) -> Any:
        if _manages_beams(node):
            return node.tile_beams(beam_size)
        return jnp.repeat(node, beam_size, axis=1)

    return jax.tree_util.tree_map(tile, cache, is_leaf=_manages_beams)


def gather_beams(tree: Any, parents: jax.Array) -> Any:
    """Selects hypotheses along the beam axis of every leaf.

    Args:
        tree: pytree whose leaves are `[batch, beam, ...]`, or `ManagesBeams` nodes (which
            reorder themselves).
        parents: `[batch, new_beam]` int32, for each output hypothesis the beam it comes from.

    Returns:
        The pytree with leaves `[batch, new_beam, ...]`.
    """
    take_rows = jax.vmap(lambda x, idx: x[idx])

    def gather(node: Any) -> Any:
        if _manages_beams(node):
            return node.reorder_beams(parents)
        return take_rows(node, parents)

    return jax.tree_util.tree_map(gather, tree, is_leaf=_manages_beams)


def last_tokens(sequences: jax.Array, step: jax.Array, bos_id: int) -> jax.Array:
    """The token each hypothesis was last given: BOS at step 0, else the one generated last.

    Args:
        sequences: `[batch, beam, max_length]` int32 generated tokens.
        step: `[]` int32, number of tokens generated so far.
        bos_id: id fed at the first step.

    Returns:
        `[batch, beam]` int32.
    """
    previous = jnp.take(sequences, jnp.maximum(step - 1, 0), axis=2)
    return jnp.where(step == 0, jnp.int32(bos_id), previous)


def write_tokens(sequences: jax.Array, step: jax.Array, tokens: jax.Array) -> jax.Array:
    """Writes `tokens` `[batch, beam]` at position `step` of `sequences` `[batch, beam, length]`."""
    return sequences.at[:, :, step].set(tokens.astype(sequences.dtype))
