"""The recurrent encoder: a front end and a stacked (optionally bidirectional) LSTM/GRU."""

from __future__ import annotations

import flax.linen as nn

from s2s_jax.models.frontends import example_inputs, make_frontend
from s2s_jax.models.rnn import RecurrentStack
from s2s_jax.models.rnn_config import RNNEncoderConfig
from s2s_jax.models.types import Array, Encoded, dtypes_of

EMBED_INIT_STD = 1.0  # token tables of the recurrent parts: N(0, 1) rows


def reject_packing(owner: str, **packing: Array | None) -> None:
    """Raises if any packing array (segment ids or positions) is given to a recurrent part.

    A recurrent state would carry one example into the next within a packed row.
    """
    given = [name for name, value in packing.items() if value is not None]
    if given:
        raise ValueError(
            f"{owner} got {', '.join(given)}, but packing needs Transformer encoder and decoder; "
            "use length buckets (data.pack_length=0) with a recurrent encoder or decoder."
        )


class RecurrentEncoder(nn.Module):
    """Front end + ``RecurrentStack``; padding never leaks into states.

    Attributes:
      config: its hyperparameters.
      shared_embedding: a token table shared with the decoder, or None for its own front end.
    """

    config: RNNEncoderConfig
    shared_embedding: nn.Module | None = None

    def setup(self) -> None:
        cfg = self.config
        if self.shared_embedding is None:
            frontend = make_frontend(cfg, cfg.embed_dim, EMBED_INIT_STD, **dtypes_of(cfg))
            if cfg.input == "tokens":
                self.embedding = frontend
            else:
                self.frontend = frontend
        self.stack = RecurrentStack(
            cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout,
            unroll=cfg.unroll, kernel=cfg.lstm_kernel, **dtypes_of(cfg),
        )  # fmt: skip

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
          train: enables dropout.
          inputs_segmentation, inputs_position: must be None (no packing for recurrences).

        Returns:
          ``{"outputs": [batch, src_len, dirs*hidden] (zero at padding), "mask": [batch,
          src_len] bool, "final": per-layer carries with leaves [batch, dirs*hidden]}``.
        """
        reject_packing(
            "RecurrentEncoder",
            inputs_segmentation=inputs_segmentation,
            inputs_position=inputs_position,
        )
        cfg = self.config
        if cfg.input == "tokens":
            table = self.embedding if self.shared_embedding is None else self.shared_embedding
            x = table(inputs)
        else:
            x = self.frontend(inputs)
        outputs, finals = self.stack(x, inputs_mask, train=train)
        return {"outputs": outputs, "mask": inputs_mask, "final": finals}

    def example_inputs(self, src_len: int) -> tuple[Array, Array]:
        """Batch-1 dummy ``(inputs, inputs_mask)`` for parameter init."""
        return example_inputs(self.config, src_len)
