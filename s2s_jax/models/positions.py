"""Position information for Transformers.

Four kinds, used at different places of the model:
  * absolute tables added to the embeddings: fixed sinusoids or a learned table
    (``AbsolutePositionEmbedding``), limited to ``max_position`` positions;
  * rotary embeddings rotating queries and keys of self-attention (``apply_rope``);
  * T5 relative position bias added to self-attention logits (``RelativePositionBias``).

Positions are integer arrays ``[batch or 1, length]`` so the same code serves a whole sequence
(``arange``), a packed row (restarting at 0 per segment, ``segment_positions``) and one decoding
step (each hypothesis at its own position).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

# Wavelengths grow geometrically up to 2*pi*10_000, as in Vaswani et al. (2017) and RoFormer.
MAX_TIMESCALE = 10_000.0


def _inverse_frequencies(dim: int) -> np.ndarray:
    """``[dim // 2]`` float64: ``MAX_TIMESCALE ** (-2i / dim)`` for pair ``i``."""
    return MAX_TIMESCALE ** (-np.arange(dim // 2, dtype=np.float64) * 2.0 / dim)


def sinusoidal_table(length: int, features: int) -> np.ndarray:
    """The fixed sinusoidal position table of "Attention Is All You Need".

    Args:
      length: number of positions.
      features: embedding size (even).

    Returns:
      ``[length, features]`` float32; row ``p`` is ``sin(p * w_i)`` for ``i < features / 2``
      followed by ``cos(p * w_i)``, with ``w_i = 10000 ** (-2i / features)``.
    """
    if features % 2:
        raise ValueError(f"sinusoidal positions need an even size, got {features}.")
    angles = np.arange(length, dtype=np.float64)[:, None] * _inverse_frequencies(features)[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def apply_rope(x: Array, positions: Array) -> Array:
    """Rotary position embedding (RoFormer), pairing dimension ``i`` with ``i + head_dim / 2``.

    Args:
      x: ``[batch, length, heads, head_dim]`` queries or keys; head_dim even.
      positions: ``[batch or 1, length]`` integer positions.

    Returns:
      ``x`` rotated by position, same shape and dtype. The dot product of a query rotated at
      ``m`` with a key rotated at ``n`` depends on ``m - n`` only.
    """
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"rotary positions need an even head_dim, got {head_dim}.")
    inv_freq = jnp.asarray(_inverse_frequencies(head_dim), jnp.float32)
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, head_dim / 2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def segment_positions(segmentation: Array) -> Array:
    """Positions within each segment of packed rows, as ``data.packing.pack_examples`` makes them.

    Args:
      segmentation: ``[batch, length]`` int segment ids, 1, 2, ... per example, 0 on padding;
        each segment is one contiguous run.

    Returns:
      ``[batch, length]`` int32: 0, 1, 2, ... restarting where the segment id changes, 0 on
      padding.
    """
    index = jnp.arange(segmentation.shape[1], dtype=jnp.int32)[None]
    previous = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    starts = jnp.where(segmentation != previous, index, 0)
    # The running maximum of the start indices is the start of the current segment.
    first = jax.lax.cummax(starts, axis=1)
    return jnp.where(segmentation == 0, 0, index - first).astype(jnp.int32)


def _sinusoidal(module: "AbsolutePositionEmbedding") -> Array:
    return jnp.asarray(sinusoidal_table(module.max_position, module.features))


def _learned(module: "AbsolutePositionEmbedding") -> Array:
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed"))
    return module.param("table", init, (module.max_position, module.features), module.param_dtype)


# kind -> function building the [max_position, features] table inside the module.
POSITION_TABLES: dict[str, Callable[["AbsolutePositionEmbedding"], Array]] = {
    "sinusoidal": _sinusoidal,
    "learned": _learned,
}


class AbsolutePositionEmbedding(nn.Module):
    """Looks positions up in a sinusoidal or learned table of ``max_position`` rows.

    Attributes:
      kind: a key of ``POSITION_TABLES``.
      max_position: table size; callers reject longer sequences before tracing.
      features: embedding size.
      dtype: compute dtype of the result.
      param_dtype: storage dtype of the learned table.
    """

    kind: str
    max_position: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, positions: Array) -> Array:
        """Args: positions ``[batch or 1, length]`` int.

        Returns: ``[batch or 1, length, features]`` in the compute dtype.
        """
        if self.kind not in POSITION_TABLES:
            raise ValueError(
                f"Unknown position table {self.kind!r}; valid: {', '.join(POSITION_TABLES)}."
            )
        table = POSITION_TABLES[self.kind](self)
        # clip: a step past max_position (only reachable by misuse under jit) repeats the last row.
        return jnp.take(table, positions, axis=0, mode="clip").astype(self.dtype)


def relative_position_buckets(
    relative_position: Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """T5's bucketing of key-minus-query distances.

    Half of the buckets (per direction) hold exact small distances; the rest cover distances up
    to ``max_distance`` logarithmically, and anything farther shares the last bucket. Causal
    buckets map every future key to bucket 0 (such keys are masked anyway).

    Args:
      relative_position: integer array, ``key_position - query_position``.
      bidirectional: True for encoders (past and future get separate halves of the buckets).
      num_buckets: total number of buckets.
      max_distance: distance from which all keys share the last bucket of their direction.

    Returns:
      int32 array of the same shape with values in ``[0, num_buckets)``.
    """
    distance = -relative_position.astype(jnp.int32)  # > 0 for keys in the past
    offset = jnp.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(distance < 0, num_buckets, 0)
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    # Clamp before the log so exact distances (which take the other branch) stay finite.
    ratio = jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact
    log_part = jnp.log(ratio) / np.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = jnp.minimum(max_exact + log_part.astype(jnp.int32), num_buckets - 1)
    return offset + jnp.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """T5 relative position bias: one learned scalar per (bucket, head).

    Attributes:
      num_heads: attention heads.
      num_buckets: buckets of ``relative_position_buckets``.
      max_distance: see ``relative_position_buckets``.
      bidirectional: True for the encoder, False (causal buckets) for the decoder.
      param_dtype: storage dtype of the table.
    """

    num_heads: int
    num_buckets: int
    max_distance: int
    bidirectional: bool
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """Bias for every (query, key) pair.

        Args:
          query_positions: ``[batch or 1, q_len]`` int.
          key_positions: ``[batch or 1, k_len]`` int.

        Returns:
          ``[batch or 1, heads, q_len, k_len]`` float32, to add to attention logits.
        """
        init = nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), (None, "heads")
        )
        table = self.param("table", init, (self.num_buckets, self.num_heads), self.param_dtype)
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        buckets = relative_position_buckets(
            relative,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [b, q, k, heads]
        return jnp.moveaxis(bias, -1, 1)
