"""What every model module shares: array aliases, dtypes, validation helpers and the pair protocol.

A seq2seq model is an encoder and a decoder chosen independently (``models/registry.py``) and
paired by ``models/seq2seq.py``. Training, evaluation and decoding only use the methods of
:class:`Seq2SeqModel`, so they never branch on the encoder, the decoder or the input modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from s2s_jax.models.config_checks import DTYPE_NAMES

Array = jax.Array
PyTree = Any
Encoded = dict[str, Any]  # {"outputs": [b, s, d], "mask": [b, s] bool, optional "final", ...}
Memory = dict[str, Any]  # per-source state of step-by-step decoding, leaves [batch, ...]
Cache = dict[str, Any]  # per-hypothesis state, leaves [batch, beam, ...]

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
assert tuple(DTYPES) == DTYPE_NAMES


@runtime_checkable
class Seq2SeqModel(Protocol):
    """The interface of every registered encoder-decoder pair (a linen module).

    Shapes: ``inputs`` token ids ``[batch, src_len]`` int32 or float frames ``[batch, src_len,
    features]``; ``inputs_mask`` ``[batch, src_len]`` bool, True on real positions (the only
    source of lengths); ``decoder_inputs`` ``[batch, tgt_len]`` int32, the targets shifted right
    (BOS first); logits float32 ``[batch, tgt_len, tgt_vocab]``. Step-by-step decoding:
    ``memory`` leaves ``[batch, ...]`` (never tiled per beam), ``cache`` leaves ``[batch, 1,
    ...]`` from ``init_decode`` (decoders tile them to ``[batch, beam, ...]``), ``ids``
    ``[batch, beam]``. Packed batches pass ``*_segmentation`` / ``*_position`` ``[batch, len]``
    int32 (encoders and decoders that cannot pack raise ``ValueError``).
    """

    def encode(self, inputs: Array, inputs_mask: Array, *, train: bool, **packing) -> Encoded:
        """The source batch encoded: ``{"outputs": [b, s, d], "mask": [b, s] bool, ...}``."""

    def decode(
        self, encoded: Encoded, decoder_inputs: Array, *, train: bool, **packing
    ) -> Array | tuple[Array, Array]:
        """Teacher-forced logits (and attention ``[b, t, s]`` with ``return_attention``)."""

    def init_decode(self, encoded: Encoded, max_length: int) -> tuple[Memory, Cache]:
        """Memory and the beam-1 cache before the first decoding step."""

    def decode_step(self, memory: Memory, ids: Array, cache: Cache) -> tuple[Array, Cache]:
        """Logits ``[batch, beam, tgt_vocab]`` float32 of the next token, and the new cache."""

    def for_decoding(self, params: PyTree) -> tuple[Seq2SeqModel, PyTree]:
        """``(model, params)`` that step-by-step decoding runs (same logits)."""

    def example_inputs(self, src_len: int) -> tuple[Array, Array]:
        """Dummy ``(inputs, inputs_mask)`` of batch 1 for initialising parameters."""


def masked_mean(outputs: Array, mask: Array) -> Array:
    """Mean of ``outputs`` ``[b, s, d]`` over the positions where ``mask`` ``[b, s]`` is True."""
    weights = mask.astype(outputs.dtype)[..., None]
    total = jnp.sum(outputs * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def dtypes_of(config: Any) -> Mapping[str, Any]:
    """``{"dtype", "param_dtype"}`` keyword arguments of a part config's dtype names."""
    return {"dtype": DTYPES[config.dtype], "param_dtype": DTYPES[config.param_dtype]}
