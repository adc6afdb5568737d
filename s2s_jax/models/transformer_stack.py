"""What the Transformer encoder and decoder share: positions, embeddings, the final norm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from s2s_jax.models.positions import (
    AbsolutePositionEmbedding,
    RelativePositionBias,
    segment_positions,
)
from s2s_jax.models.transformer_config import POSITION_TABLE_NAMES, TransformerConfig
from s2s_jax.models.transformer_layers import make_norm
from s2s_jax.models.types import DTYPES, Array, Encoded


def resolve_positions(
    mask: Array, segmentation: Array | None, positions: Array | None, side: str
) -> Array:
    """Positions of one side of a batch, checking the packing arrays against its shape.

    Args:
      mask: ``[batch, length]``, the side's shape (a source mask or the token ids).
      segmentation: None or ``[batch, length]`` int segment ids (0 = padding).
      positions: None or ``[batch, length]`` int positions.
      side: "inputs" or "targets", for error messages.

    Returns:
      ``positions`` if given; else the within-segment positions of ``segmentation``; else
      ``arange(length)`` as ``[1, length]`` (the unpacked behaviour).
    """
    for name, array in ((f"{side}_segmentation", segmentation), (f"{side}_position", positions)):
        if array is not None and array.shape != mask.shape:
            raise ValueError(
                f"{name} has shape {tuple(array.shape)} but {side} has {tuple(mask.shape)}: "
                "packed batches give every array of a side the same [batch, length] shape."
            )
    if positions is not None:
        return positions
    if segmentation is not None:
        return segment_positions(segmentation)
    return jnp.arange(mask.shape[1])[None]


def segmentation_pair(
    encoded: Encoded, targets_segmentation: Array | None
) -> tuple[Array, Array] | None:
    """(target, source) segment ids of a packed batch, None for an unpacked one."""
    packed_source = "segmentation" in encoded
    if packed_source == (targets_segmentation is None):
        given, source = ("no ", "with") if packed_source else ("", "without")
        raise ValueError(
            f"decode got {given}targets_segmentation for a source encoded {source} "
            "inputs_segmentation: a packed batch passes both segmentations, an unpacked one "
            "neither (attention could otherwise cross examples)."
        )
    return (targets_segmentation, encoded["segmentation"]) if packed_source else None


def absolute_positions(config: TransformerConfig) -> nn.Module | None:
    """The absolute position table the config names, or None (rope, T5 bias)."""
    if config.position not in POSITION_TABLE_NAMES:
        return None
    return AbsolutePositionEmbedding(
        kind=config.position,
        max_position=config.max_position,
        features=config.d_model,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
    )


def relative_bias(config: TransformerConfig, bidirectional: bool) -> nn.Module | None:
    """The T5 relative position bias of a stack, or None."""
    if config.position != "t5_relative":
        return None
    return RelativePositionBias(
        num_heads=config.num_heads,
        num_buckets=config.relative_buckets,
        max_distance=config.relative_max_distance,
        bidirectional=bidirectional,
        param_dtype=DTYPES[config.param_dtype],
    )


def embedding_init_std(config: TransformerConfig) -> float:
    # std d_model**-0.5: scaled by sqrt(d_model) the inputs have unit variance, and a tied output
    # projection gives unit-scale logits from normalised states (fairseq / Marian convention).
    return config.d_model**-0.5


class Stack(nn.Module):
    """Shared by the encoder and decoder stacks: positions on the inputs and the final norm.

    Subclasses set ``positions``, ``dropout`` and ``final_norm`` in ``setup``.
    """

    def _setup_stack(self, bidirectional: bool) -> None:
        cfg = self.config
        self.positions = absolute_positions(cfg)
        self.relative_bias = relative_bias(cfg, bidirectional=bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.final_norm = make_norm(cfg) if cfg.pre_norm else None

    def _scaled(self, x: Array) -> Array:
        scale = self.config.d_model**0.5 if self.config.scale_embeddings else 1.0
        return x * jnp.asarray(scale, x.dtype)

    def _prepare(self, x: Array, positions: Array, deterministic: bool) -> Array:
        if self.positions is not None:
            x = x + self.positions(positions)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return self.dropout(x, deterministic=deterministic)

    def _finish(self, x: Array) -> Array:
        # Post-LN layers already end in a norm; pre-LN stacks need one after the last residual.
        return self.final_norm(x) if self.config.pre_norm else x
