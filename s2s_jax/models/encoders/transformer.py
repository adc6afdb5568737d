"""The Transformer encoder: a front end (token embedding or frame projection) and a layer stack."""

from __future__ import annotations

import flax.linen as nn

from s2s_jax.models.attention_kernel import AttentionMask, key_lengths
from s2s_jax.models.frontends import example_inputs, make_frontend
from s2s_jax.models.transformer_config import TransformerEncoderConfig, check_length
from s2s_jax.models.transformer_layers import (
    ENCODER_IN_AXES,
    EncoderLayer,
    apply_layers,
    layer_stack,
    mask_bias,
    segment_mask,
)
from s2s_jax.models.transformer_stack import Stack, embedding_init_std, resolve_positions
from s2s_jax.models.types import Array, Encoded, dtypes_of


class TransformerEncoder(Stack):
    """Transformer encoder (Vaswani et al. 2017 and its T5 / Marian variants).

    Attributes:
      config: its hyperparameters.
      shared_embedding: a token embedding shared with the decoder (``model.share_embeddings``),
        or None for its own front end.

    Params: ``embedding`` (own token table) or ``frontend`` (frame projection), ``layers``
    (scanned: a leading "layers" axis; unrolled: ``layers_<i>``), positions, ``final_norm``.
    """

    config: TransformerEncoderConfig
    shared_embedding: nn.Module | None = None

    def setup(self):
        cfg = self.config
        if self.shared_embedding is None:
            frontend = make_frontend(cfg, cfg.d_model, embedding_init_std(cfg), **dtypes_of(cfg))
            if cfg.input == "tokens":
                self.embedding = frontend
            else:
                self.frontend = frontend
        self._setup_stack(bidirectional=True)
        self.layers = layer_stack(cfg, EncoderLayer, cfg.num_layers, ENCODER_IN_AXES, 0)

    def _front(self, inputs: Array) -> Array:
        cfg = self.config
        if cfg.input == "tokens":
            table = self.embedding if self.shared_embedding is None else self.shared_embedding
            return self._scaled(table(inputs))
        return self.frontend(inputs)

    def __call__(
        self,
        inputs: Array,
        inputs_mask: Array,
        *,
        train: bool,
        inputs_segmentation: Array | None = None,
        inputs_position: Array | None = None,
    ) -> Encoded:
        """Encodes a source batch.

        Args:
          inputs: ``[batch, src_len]`` int32 ids or ``[batch, src_len, features]`` frames.
          inputs_mask: ``[batch, src_len]`` bool, True on real positions.
          train: enables dropout (needs a "dropout" rng).
          inputs_segmentation: None, or ``[batch, src_len]`` int segment ids of a packed batch
            (1, 2, ... per example, 0 on padding); self-attention stays within a segment.
          inputs_position: None, or ``[batch, src_len]`` int positions (restarting at 0 per
            segment). Defaults: within-segment positions when packed, else 0..src_len-1.

        Returns:
          ``{"outputs": [batch, src_len, d_model], "mask": [batch, src_len] bool}``, plus
          ``"segmentation"`` when packed.
        """
        check_length(self.config, inputs_mask.shape[1], "The source")
        positions = resolve_positions(inputs_mask, inputs_segmentation, inputs_position, "inputs")
        allowed = inputs_mask[:, None, :]  # [batch, 1, keys]
        if inputs_segmentation is not None:
            allowed = allowed & segment_mask(inputs_segmentation, inputs_segmentation)
        bias = mask_bias(allowed)
        if self.relative_bias is not None:
            bias = bias + self.relative_bias(positions, positions)
        exact = inputs_segmentation is None and self.relative_bias is None
        mask = AttentionMask(bias, key_lengths(inputs_mask), exact=exact)
        x = self._prepare(self._front(inputs), positions, not train)
        x, _ = apply_layers(self.layers, ENCODER_IN_AXES, 0, x, not train, mask, positions)
        encoded = {"outputs": self._finish(x), "mask": inputs_mask}
        if inputs_segmentation is not None:
            encoded["segmentation"] = inputs_segmentation
        return encoded

    def example_inputs(self, src_len: int) -> tuple[Array, Array]:
        """Batch-1 dummy ``(inputs, inputs_mask)`` for parameter init."""
        return example_inputs(self.config, src_len)
