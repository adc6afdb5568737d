"""Any encoder paired with any decoder: the one model class training and decoding use.

``Seq2Seq`` implements ``types.Seq2SeqModel``. Its params are ``{"encoder": ..., "decoder":
...}`` plus ``shared_embedding`` when ``share_embeddings`` (one token table for both sides,
owned here and handed to both parts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from s2s_jax.models.transformer_layers import unstack_layer_params
from s2s_jax.models.types import Array, Cache, Encoded, Memory, PyTree


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """A resolved pair: the encoder's and the decoder's frozen configs and their types.

    Attributes:
      encoder_type, decoder_type: registry names (``models/registry.py``).
      encoder, decoder: the parts' frozen configs (vocabulary sizes and dtypes filled in).
      share_embeddings: one token table for source and target.
    """

    encoder_type: str
    decoder_type: str
    encoder: Any
    decoder: Any
    share_embeddings: bool = False


class Seq2Seq(nn.Module):
    """An encoder module and a decoder module, built by ``registry.build_model``.

    Attributes:
      config: the resolved pair (for checkpoints, descriptions and ``for_decoding``).
      encoder_cls, decoder_cls: the registered part classes.
      embedding_fn: builds the shared token table (``share_embeddings``), else None.
    """

    config: Seq2SeqConfig
    encoder_cls: Any
    decoder_cls: Any
    embedding_fn: Any = None

    def setup(self) -> None:
        cfg = self.config
        shared = {}
        if cfg.share_embeddings:
            self.shared_embedding = self.embedding_fn(cfg.decoder)
            shared = {"shared_embedding": self.shared_embedding}
        self.encoder = self.encoder_cls(cfg.encoder, **shared)
        self.decoder = self.decoder_cls(cfg.decoder, **shared)

    def encode(
        self,
        inputs: Array,
        inputs_mask: Array,
        *,
        train: bool,
        inputs_segmentation: Array | None = None,
        inputs_position: Array | None = None,
    ) -> Encoded:
        """The source batch encoded; see ``types.Seq2SeqModel``."""
        return self.encoder(
            inputs,
            inputs_mask,
            train=train,
            inputs_segmentation=inputs_segmentation,
            inputs_position=inputs_position,
        )

    def decode(
        self, encoded: Encoded, decoder_inputs: Array, *, train: bool, **kwargs: Any
    ) -> Array | tuple[Array, Array]:
        """Teacher-forced logits (``targets_segmentation``, ``targets_position``,
        ``return_attention`` pass through to the decoder)."""
        return self.decoder(encoded, decoder_inputs, train=train, **kwargs)

    def init_decode(self, encoded: Encoded, max_length: int) -> tuple[Memory, Cache]:
        """Memory and beam-1 cache before the first step."""
        return self.decoder.init_decode(encoded, max_length)

    def decode_step(self, memory: Memory, ids: Array, cache: Cache) -> tuple[Array, Cache]:
        """Logits ``[batch, beam, vocab]`` of the next token and the new cache."""
        return self.decoder.decode_step(memory, ids, cache)

    def __call__(
        self,
        inputs: Array,
        decoder_inputs: Array,
        *,
        inputs_mask: Array,
        train: bool,
        inputs_segmentation: Array | None = None,
        targets_segmentation: Array | None = None,
        inputs_position: Array | None = None,
        targets_position: Array | None = None,
    ) -> Array:
        """Encode then decode: logits ``[batch, tgt_len, tgt_vocab]`` float32."""
        encoded = self.encode(
            inputs,
            inputs_mask,
            train=train,
            inputs_segmentation=inputs_segmentation,
            inputs_position=inputs_position,
        )
        return self.decode(
            encoded,
            decoder_inputs,
            train=train,
            targets_segmentation=targets_segmentation,
            targets_position=targets_position,
        )

    def example_inputs(self, src_len: int) -> tuple[Array, Array]:
        """Batch-1 dummy ``(inputs, inputs_mask)`` for parameter init (unbound is fine)."""
        return self.encoder_cls(self.config.encoder, parent=None).example_inputs(src_len)

    def for_decoding(self, params: PyTree) -> tuple[Seq2Seq, PyTree]:
        """The ``(model, params)`` pair to decode step by step with; call on the unbound model.

        A decoding step runs a Transformer decoder's layers one by one; with scanned layers
        that would slice every layer's params out of the stack on every step, so decoding uses
        the twin whose decoder is unrolled, its params unstacked once (same logits).
        """
        decoder = self.config.decoder
        if not getattr(decoder, "scan_layers", False):
            return self, params
        twin_config = dataclasses.replace(
            self.config, decoder=dataclasses.replace(decoder, scan_layers=False)
        )
        twin = self.clone(config=twin_config)
        return twin, {**params, "decoder": unstack_layer_params(params["decoder"])}
