"""Small encoder-decoder pairs for the model tests, described as one family at a time.

The model tests check an all-recurrent or an all-Transformer pair; these helpers take the
sizes they care about (source and target vocabularies, per-side depths, the fields both sides
share) and return the resolved ``Seq2SeqConfig`` and its ``Seq2Seq`` module, built through
``models.registry.pair`` and checked with ``registry.check_pair`` as ``build_model`` does.
Configs are frozen and hashable, so tests can cache compiled programs per config.
"""

import dataclasses

import jax

from s2s_jax.data.vocab import PAD_ID
from s2s_jax.models import registry
from s2s_jax.models.rnn_config import RNNDecoderConfig, RNNEncoderConfig
from s2s_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from s2s_jax.models.transformer_config import TransformerDecoderConfig, TransformerEncoderConfig


def source_mask(inputs: jax.Array) -> jax.Array:
    """``[batch, src_len]`` bool, True on real tokens (PAD_ID is padding)."""
    return inputs != PAD_ID


def _checked(config: Seq2SeqConfig) -> Seq2SeqConfig:
    registry.check_pair(config)
    return config


def rnn_config(
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    cell: str = "lstm",
    embed_dim: int = 64,
    hidden_size: int = 128,
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    bidirectional: bool = False,
    attention: str = "luong_general",
    num_heads: int = 4,
    input_feeding: bool = True,
    dropout: float = 0.0,
    dtype: str = "float32",
    param_dtype: str = "float32",
    unroll: int = 1,
    share_embeddings: bool = False,
) -> Seq2SeqConfig:
    """A recurrent encoder and a recurrent decoder sharing cell, sizes, dropout and dtypes."""
    shared = dict(
        cell=cell, embed_dim=embed_dim, hidden_size=hidden_size, dropout=dropout, unroll=unroll,
        dtype=dtype, param_dtype=param_dtype,
    )  # fmt: skip
    encoder = RNNEncoderConfig(
        vocab_size=src_vocab_size, num_layers=encoder_layers, bidirectional=bidirectional, **shared
    )
    decoder = RNNDecoderConfig(
        vocab_size=tgt_vocab_size, num_layers=decoder_layers, attention=attention,
        num_heads=num_heads, input_feeding=input_feeding, **shared,
    )  # fmt: skip
    return _checked(Seq2SeqConfig("rnn", "rnn", encoder, decoder, share_embeddings))


def rnn_model(src_vocab_size: int, tgt_vocab_size: int, **fields) -> Seq2Seq:
    """The ``Seq2Seq`` module of ``rnn_config(src_vocab_size, tgt_vocab_size, **fields)``."""
    return registry.pair(rnn_config(src_vocab_size, tgt_vocab_size, **fields))


def transformer_config(
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    share_embeddings: bool = False,
    tie_output: bool = True,
    final_logits_bias: bool = False,
    **stack_fields,
) -> Seq2SeqConfig:
    """A Transformer encoder and decoder; ``stack_fields`` (``d_model``, ``position``,
    ``scan_layers``, ...: ``TransformerConfig`` fields) apply to both stacks."""
    encoder = TransformerEncoderConfig(
        vocab_size=src_vocab_size, num_layers=encoder_layers, **stack_fields
    )
    decoder = TransformerDecoderConfig(
        vocab_size=tgt_vocab_size, num_layers=decoder_layers, tie_output=tie_output,
        final_logits_bias=final_logits_bias, **stack_fields,
    )  # fmt: skip
    config = Seq2SeqConfig("transformer", "transformer", encoder, decoder, share_embeddings)
    return _checked(config)


def transformer_model(src_vocab_size: int, tgt_vocab_size: int, **fields) -> Seq2Seq:
    """The ``Seq2Seq`` module of ``transformer_config(src_vocab_size, tgt_vocab_size, ...)``."""
    return registry.pair(transformer_config(src_vocab_size, tgt_vocab_size, **fields))


def replace_parts(config: Seq2SeqConfig, **fields) -> Seq2SeqConfig:
    """``config`` with ``fields`` replaced in both part configs (each must have every field)."""
    return _checked(
        dataclasses.replace(
            config,
            encoder=dataclasses.replace(config.encoder, **fields),
            decoder=dataclasses.replace(config.decoder, **fields),
        )
    )
