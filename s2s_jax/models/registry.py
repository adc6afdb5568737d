"""The encoder and decoder registries, and building a pair from the run config's ``model``.

``model.encoder.type`` and ``model.decoder.type`` name an entry here; each section carries only
the keys of its type's config dataclass (fields filled from the data — vocabulary sizes, frame
features — and the model-wide dtypes are not keys). Adding an encoder or a decoder: write its
module (a linen module with the methods its side of ``types.Seq2SeqModel`` needs, taking its
config dataclass), add one line below and its config's line in the JAX-free ``parts.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from s2s_jax.models.decoders import rnn as rnn_decoder
from s2s_jax.models.decoders import transformer as transformer_decoder
from s2s_jax.models.encoders.rnn import RecurrentEncoder
from s2s_jax.models.encoders.transformer import TransformerEncoder
from s2s_jax.models.parts import part_defaults
from s2s_jax.models.rnn_config import RNNDecoderConfig, RNNEncoderConfig
from s2s_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from s2s_jax.models.transformer_config import TransformerDecoderConfig, TransformerEncoderConfig


class Part(NamedTuple):
    config: type  # frozen dataclass of the part's hyperparameters
    module: type  # linen module taking (config, shared_embedding=None)
    embedding: Any = None  # decoders: config -> the token table shared by both sides


ENCODERS: dict[str, Part] = {
    "rnn": Part(RNNEncoderConfig, RecurrentEncoder),
    "transformer": Part(TransformerEncoderConfig, TransformerEncoder),
}
DECODERS: dict[str, Part] = {
    "rnn": Part(RNNDecoderConfig, rnn_decoder.RecurrentDecoder, rnn_decoder.make_embedding),
    "transformer": Part(
        TransformerDecoderConfig,
        transformer_decoder.TransformerDecoder,
        transformer_decoder.make_embedding,
    ),
}
REGISTRIES = {"encoder": ENCODERS, "decoder": DECODERS}

MODEL_KEYS = ("encoder", "decoder", "share_embeddings", "dtype", "param_dtype")


def _part_config(side: str, section: Mapping[str, Any], model: Mapping[str, Any], sizes: dict):
    values = dict(section)
    type_name = values.pop("type")
    expected = part_defaults(side, type_name)
    unknown = sorted(set(values) - set(expected))
    if unknown:
        raise ValueError(
            f"model.{side} of type {type_name!r} has no key(s) {', '.join(unknown)}; its keys: "
            f"{', '.join(k for k in expected if k != 'type')}."
        )
    config_cls = REGISTRIES[side][type_name].config
    names = {f.name for f in dataclasses.fields(config_cls)}
    injected = {"dtype": model["dtype"], "param_dtype": model["param_dtype"], **sizes}
    return config_cls(**values, **{k: v for k, v in injected.items() if k in names})


def model_config(
    section: Mapping[str, Any],
    src_vocab_size: int,
    tgt_vocab_size: int,
    input_features: int = 0,
) -> Seq2SeqConfig:
    """The resolved pair config of the run config's ``model`` section, checked for fit.

    Args:
      section: ``model`` (``encoder``, ``decoder``, ``share_embeddings``, dtypes).
      src_vocab_size: source token ids (0 when the sources are not tokens).
      tgt_vocab_size: target token ids.
      input_features: features per source frame (0 for token sources).
    """
    unknown = sorted(set(section) - set(MODEL_KEYS))
    if unknown:
        raise ValueError(
            f"model has no key(s) {', '.join(unknown)} (a config from before encoders and "
            f"decoders were separate parts?); model keys: {', '.join(MODEL_KEYS)}."
        )
    source = {"vocab_size": src_vocab_size, "input_features": input_features}
    encoder = _part_config("encoder", section["encoder"], section, source)
    decoder = _part_config("decoder", section["decoder"], section, {"vocab_size": tgt_vocab_size})
    config = Seq2SeqConfig(
        encoder_type=section["encoder"]["type"],
        decoder_type=section["decoder"]["type"],
        encoder=encoder,
        decoder=decoder,
        share_embeddings=bool(section["share_embeddings"]),
    )
    check_pair(config)
    return config


def check_pair(config: Seq2SeqConfig) -> None:
    """Raises ValueError when the decoder needs what the encoder does not give."""
    enc, dec = config.encoder, config.decoder
    source = getattr(enc, "input", None)
    if source == "tokens" and enc.vocab_size < 1:
        raise ValueError(
            "model.encoder.input is 'tokens' but the data has no source vocabulary (its sources "
            "are float frames?): use the encoder input 'features' for float frames."
        )
    if source == "features" and enc.input_features < 1:
        raise ValueError(
            "model.encoder.input is 'features' but the data gives token ids (no frame size): "
            "use the encoder input 'tokens'."
        )
    if config.share_embeddings:
        enc_width = getattr(enc, "d_model", getattr(enc, "embed_dim", None))
        dec_width = getattr(dec, "d_model", getattr(dec, "embed_dim", None))
        if getattr(enc, "input", "tokens") != "tokens" or enc.vocab_size != dec.vocab_size:
            raise ValueError(
                "share_embeddings needs token sources and one vocabulary for both sides (source "
                f"{enc.vocab_size} ids, target {dec.vocab_size}): use one joint vocabulary "
                "(data.shared_vocab) or set model.share_embeddings=false."
            )
        if enc_width != dec_width:
            raise ValueError(
                f"share_embeddings needs equal embedding widths, got encoder {enc_width} and "
                f"decoder {dec_width}; make them equal or set model.share_embeddings=false."
            )
    attention = getattr(dec, "attention", None)
    if attention == "luong_dot" and enc.output_size != dec.hidden_size:
        raise ValueError(
            f"luong_dot attention needs encoder outputs of the decoder's size ({dec.hidden_size})"
            f", but this encoder outputs {enc.output_size} (bidirectional or another width); use "
            "luong_general, or match the sizes."
        )


def build_model(
    section: Mapping[str, Any],
    src_vocab_size: int,
    tgt_vocab_size: int,
    input_features: int = 0,
) -> tuple[Seq2Seq, Seq2SeqConfig]:
    """Returns ``(module, config)`` for the run config's ``model`` section."""
    config = model_config(section, src_vocab_size, tgt_vocab_size, input_features)
    return pair(config), config


def pair(config: Seq2SeqConfig) -> Seq2Seq:
    """The ``Seq2Seq`` module of a resolved pair config."""
    decoder = DECODERS[config.decoder_type]
    return Seq2Seq(
        config,
        ENCODERS[config.encoder_type].module,
        decoder.module,
        decoder.embedding if config.share_embeddings else None,
    )


def describe(config: Seq2SeqConfig) -> dict[str, Any]:
    """The resolved model as a JSON-safe dict (stored in checkpoints and compared on restore)."""
    return {
        "encoder": {"type": config.encoder_type, **dataclasses.asdict(config.encoder)},
        "decoder": {"type": config.decoder_type, **dataclasses.asdict(config.decoder)},
        "share_embeddings": config.share_embeddings,
    }
