"""The Transformer decoder's step-by-step attention cache, apart from the layers that use it.

A ``StepCache`` holds one layer's self-attention keys and values for every hypothesis; beam
search reorders only its row table (``decoding.hypotheses.ManagesBeams``), never the buffers.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


def scaled_softmax(logits: Array, head_dim: int, bias: Array) -> Array:
    """``softmax(logits / sqrt(head_dim) + bias)`` over the last (key) axis."""
    return jax.nn.softmax(logits * head_dim**-0.5 + bias, axis=-1)


@flax.struct.dataclass
class StepCache:
    """One layer's self-attention keys and values for step-by-step decoding.

    Row ``j`` of the buffers holds, at slot ``s``, the key (value) written at step ``s`` by the
    hypothesis that sat in row ``j`` then. Buffers are only ever written in place: when beam
    search reorders hypotheses, only ``rows`` follows them (``reorder_beams``), so a beam step
    never copies or gathers the buffers. Each query attends over every row's keys (a few
    times the work of a tiny matmul) and keeps, per slot, the row of its own ancestor.

    The layouts make both attention products plain batched matmuls over ``(batch, heads)``
    (contraction over ``head_dim``, then over ``(beam, slots)``) with no transposes.
    """

    keys: Array  # [batch, heads, head_dim, beam, slots]
    values: Array  # [batch, heads, beam, slots, head_dim]
    rows: Array  # [batch, beam, slots] int32: the buffer row holding hypothesis i's slot s

    @property
    def slots(self) -> int:
        return self.rows.shape[-1]

    def tile_beams(self, beam_size: int) -> StepCache:
        """Every row a copy of the beam-1 buffers (``hypotheses.ManagesBeams``)."""
        return StepCache(
            jnp.repeat(self.keys, beam_size, axis=3),
            jnp.repeat(self.values, beam_size, axis=2),
            jnp.repeat(self.rows, beam_size, axis=1),
        )

    def reorder_beams(self, parents: Array) -> StepCache:
        """Hypothesis ``i`` takes the history of ``parents[b, i]``; the buffers do not move."""
        return self.replace(rows=jnp.take_along_axis(self.rows, parents[:, :, None], axis=1))

    def write(self, key: Array, value: Array, positions: Array) -> StepCache:
        """Writes each hypothesis' new key/value into its own row at its own position.

        Args:
          key: ``[batch, beam, heads, head_dim]``; value likewise.
          positions: ``[batch, beam]`` int, the slot to write (out-of-range slots are dropped).

        Returns:
          The updated cache: one scatter of ``batch * beam`` columns per buffer (every
          hypothesis may sit at a different step; the rest of the buffer is updated in place,
          not rewritten), and ``rows`` recording that hypothesis ``i``'s slot is in row ``i``.
        """
        b = jnp.arange(positions.shape[0])[:, None]
        i = jnp.arange(positions.shape[1])[None, :]
        keys = self.keys.at[b, :, :, i, positions].set(key.astype(self.keys.dtype), mode="drop")
        values = self.values.at[b, :, i, positions, :].set(
            value.astype(self.values.dtype), mode="drop"
        )
        rows = self.rows.at[b, i, positions].set(jnp.broadcast_to(i, positions.shape), mode="drop")
        return StepCache(keys, values, rows)

    def attend(self, query: Array, bias: Array) -> Array:
        """Each hypothesis' attention over its own history.

        Args:
          query: ``[batch, beam, heads, head_dim]``.
          bias: additive, broadcastable to ``[batch, heads, beam, slots]``.

        Returns:
          ``[batch, beam, heads, head_dim]``.
        """
        query = jnp.swapaxes(query, 1, 2)  # [b, h, i, d]
        every_row = jnp.einsum(
            "bhid,bhdjk->bhijk", query, self.keys, preferred_element_type=jnp.float32
        )
        beam = self.rows.shape[1]
        if beam == 1:  # greedy decoding and sampling: one row, nothing to select
            weights = scaled_softmax(every_row[:, :, :, 0], query.shape[-1], bias)
            spread = weights[:, :, :, None, :]
        else:
            own = self.rows[:, None, :, None, :] == jnp.arange(beam)[:, None]  # [b,1,i,j,k]
            logits = jnp.sum(jnp.where(own, every_row, 0.0), axis=3)
            weights = scaled_softmax(logits, query.shape[-1], bias)  # [b, h, i, slots]
            spread = jnp.where(own, weights[:, :, :, None, :], 0.0)
        out = jnp.einsum("bhijk,bhjkd->bhid", spread.astype(self.values.dtype), self.values)
        return jnp.swapaxes(out, 1, 2)


def empty_cache(batch: int, heads: int, head_dim: int, max_length: int, dtype: Any) -> StepCache:
    """Zeroed buffers of one layer for beam 1 (see ``StepCache``)."""
    return StepCache(
        jnp.zeros((batch, heads, head_dim, 1, max_length), dtype),
        jnp.zeros((batch, heads, 1, max_length, head_dim), dtype),
        jnp.zeros((batch, 1, max_length), jnp.int32),
    )


def attend_step(query: Array, keys: Array, values: Array, bias: Array) -> tuple[Array, Array]:
    """One decoding step's attention over encoder memory shared by all beams.

    Args:
      query: ``[batch, beam, heads, head_dim]``, one query per hypothesis.
      keys: ``[batch, heads, head_dim, src_len]`` (``memory_step_layout``); values likewise.
      bias: additive, broadcastable to ``[batch, heads, beam, src_len]``.

    Returns:
      ``([batch, beam, heads, head_dim], weights [batch, beam, heads, src_len])``: the maths of
      ``attention_weights`` / ``_attend`` without dropout. The beams of a (batch, head) pair
      are the rows of one small matmul.
    """
    query = jnp.swapaxes(query, 1, 2)  # [b, h, beam, d]
    logits = jnp.einsum("bhid,bhdk->bhik", query, keys, preferred_element_type=jnp.float32)
    weights = scaled_softmax(logits, query.shape[-1], bias)
    out = jnp.einsum("bhik,bhdk->bhid", weights.astype(values.dtype), values)
    return jnp.swapaxes(out, 1, 2), jnp.swapaxes(weights, 1, 2)


def memory_step_layout(keys: Array) -> tuple[Array, ...]:
    """Encoder keys or values ``[batch, layers, src_len, heads, head_dim]`` -> one array per
    layer in the step layout ``[batch, heads, head_dim, src_len]`` (made once per source, before
    decoding, so no step slices or transposes them)."""
    return tuple(jnp.transpose(keys[:, i], (0, 2, 3, 1)) for i in range(keys.shape[1]))
