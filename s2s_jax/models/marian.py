"""Hugging Face Marian (``transformers.MarianMTModel``) -> an s2s_jax Transformer pair's weights.

Marian is the post-LN Transformer of Vaswani et al. with Marian-NMT's conventions, all of which
a Transformer encoder (``TransformerEncoderConfig``) paired with a Transformer decoder
(``TransformerDecoderConfig``) express:
  * sinusoidal positions from 0 (sin half then cos half, no BART-style offset), added to token
    embeddings scaled by sqrt(d_model) (``scale_embedding``), no embedding LayerNorm;
  * post-LN sublayers with ``torch.nn.LayerNorm``'s epsilon 1e-5 and no final stack norm;
  * biased q/k/v/out projections, queries scaled by head_dim**-0.5 (the same logits as
    s2s_jax's scaled dot product), a biased two-layer MLP;
  * logits ``lm_head(h) + final_logits_bias``, the head tied to the target embedding
    (``tie_word_embeddings``), source and target tables shared or not.

The bridge copies weights only; it does not remap token ids. s2s_jax fixes PAD=0, BOS=1 (the
decoder start) and EOS=2, so the Marian model must use the same ids. Real Opus-MT checkpoints do
not (pad = decoder start = vocab_size - 1, eos = 0) and would need their vocabulary permuted,
which is refused here with a ValueError rather than silently mistranslated.

torch and transformers are imported lazily: s2s_jax imports without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.models.marian_config import ACTIVATIONS
from s2s_jax.models.positions import sinusoidal_table
from s2s_jax.models.registry import check_pair
from s2s_jax.models.seq2seq import Seq2SeqConfig
from s2s_jax.models.transformer_config import (
    TransformerConfig,
    TransformerDecoderConfig,
    TransformerEncoderConfig,
)

# Marian's norms are torch.nn.LayerNorm with its default epsilon.
MARIAN_NORM_EPSILON = 1e-5
# The Hugging Face id attribute each s2s_jax special id must match.
_SPECIAL_IDS = {"pad_token_id": PAD_ID, "decoder_start_token_id": BOS_ID, "eos_token_id": EOS_ID}
# Flags of BART/mBART-style pre-LN or extra-norm variants; Marian has none of them.
_PRE_LN_FLAGS = (
    "normalize_before",
    "encoder_normalize_before",
    "decoder_normalize_before",
    "add_final_layer_norm",
    "normalize_embedding",
    "layernorm_embedding",
)
# Fields of either stack's config a caller may change freely: they do not alter eval-mode
# outputs.
_FREE_FIELDS = frozenset(
    {
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "scan_layers",
        "remat_policy",
        "dtype",
        "max_position",
    }
)
# Position tables: HF builds them in float64 and rounds to float32, as sinusoidal_table does;
# the two differ by at most an ulp (~1e-7), anything larger means a different table.
_POSITION_ATOL = 1e-6

Params = dict[str, Any]


def _check_architecture(hf_config: Any) -> None:
    model_type = getattr(hf_config, "model_type", None)
    if model_type != "marian":
        raise ValueError(
            f"Expected a Marian config (model_type 'marian'), got {model_type!r}: this bridge "
            "maps MarianMTModel only (BART/mBART add learned positions and extra norms)."
        )
    flags = [flag for flag in _PRE_LN_FLAGS if getattr(hf_config, flag, False)]
    if flags:
        raise ValueError(
            f"The Marian config sets {', '.join(flags)}: a pre-LN / extra-norm variant that "
            "MarianMTModel does not implement (its layers are post-LN). Unset these flags, or "
            "bridge such a model with a converter for its own architecture."
        )
    layerdrop = (hf_config.encoder_layerdrop, hf_config.decoder_layerdrop)
    if any(layerdrop):
        raise ValueError(
            f"encoder_layerdrop, decoder_layerdrop = {layerdrop}: s2s_jax has no LayerDrop. "
            "Set both to 0.0 on the HF config (LayerDrop only acts in training)."
        )


def _check_ids(hf_config: Any) -> None:
    for attribute, expected in _SPECIAL_IDS.items():
        value = getattr(hf_config, attribute, None)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if value != expected:
            raise ValueError(
                f"hf_config.{attribute}={value!r} but s2s_jax uses {expected} (PAD=0, decoder "
                "start=BOS=1, EOS=2). This bridge does not remap token ids: real Opus-MT "
                "checkpoints (pad = decoder start = vocab_size - 1, eos = 0) need their "
                "vocabulary permuted first. Build test models with marian_test_config()."
            )


def _check_sizes(hf_config: Any) -> None:
    pairs = {
        "attention heads": (hf_config.encoder_attention_heads, hf_config.decoder_attention_heads),
        "ffn dims": (hf_config.encoder_ffn_dim, hf_config.decoder_ffn_dim),
    }
    for what, (encoder, decoder) in pairs.items():
        if encoder != decoder:
            raise ValueError(
                f"Encoder and decoder {what} differ ({encoder} vs {decoder}); this bridge maps "
                "Marian models with one value for both stacks only (the ones it is checked "
                "against), so such a model is not bridged."
            )
    target_vocab = hf_config.decoder_vocab_size or hf_config.vocab_size
    if hf_config.share_encoder_decoder_embeddings and target_vocab != hf_config.vocab_size:
        raise ValueError(
            f"share_encoder_decoder_embeddings=True but vocab_size={hf_config.vocab_size} and "
            f"decoder_vocab_size={target_vocab} differ: make them equal, or set "
            "share_encoder_decoder_embeddings=False for separate vocabularies."
        )


def _activation(hf_config: Any) -> str:
    name = hf_config.activation_function
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation_function={name!r} has no s2s_jax equivalent; supported: "
            f"{', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def marian_to_config(
    hf_config: Any, *, scan_layers: bool = True, dtype: str = "float32"
) -> Seq2SeqConfig:
    """The Transformer pair computing what a ``MarianMTModel`` with ``hf_config`` computes.

    Args:
      hf_config: a ``transformers.MarianConfig``.
      scan_layers: scanned (True) or unrolled layer stacks; same maths.
      dtype: compute dtype name; parameters stay float32.

    Returns:
      The frozen ``Seq2SeqConfig`` of a "transformer" encoder and a "transformer" decoder
      (post-LN, sinusoidal positions, LayerNorm epsilon 1e-5; the decoder with Marian's final
      logits bias; dropout rates copied for fine-tuning); ``registry.pair`` builds the module.

    Raises:
      ValueError: the model cannot be bridged (not Marian, pre-LN flags, LayerDrop, special ids
        other than PAD=0 / BOS=1 / EOS=2, unsupported activation, mismatched sizes).
    """
    _check_architecture(hf_config)
    _check_ids(hf_config)
    _check_sizes(hf_config)
    shared = bool(hf_config.share_encoder_decoder_embeddings)
    stack = dict(
        d_model=hf_config.d_model,
        activation=_activation(hf_config),
        dropout=float(hf_config.dropout),
        attention_dropout=float(hf_config.attention_dropout),
        activation_dropout=float(hf_config.activation_dropout),
        norm="layernorm",
        norm_epsilon=MARIAN_NORM_EPSILON,
        pre_norm=False,
        position="sinusoidal",
        max_position=hf_config.max_position_embeddings,
        scale_embeddings=bool(hf_config.scale_embedding),
        scan_layers=scan_layers,
        dtype=dtype,
        param_dtype="float32",
    )
    encoder = TransformerEncoderConfig(
        vocab_size=hf_config.vocab_size,
        num_heads=hf_config.encoder_attention_heads,
        mlp_dim=hf_config.encoder_ffn_dim,
        num_layers=hf_config.encoder_layers,
        input="tokens",
        **stack,
    )
    decoder = TransformerDecoderConfig(
        vocab_size=hf_config.vocab_size if shared else hf_config.decoder_vocab_size,
        num_heads=hf_config.decoder_attention_heads,
        mlp_dim=hf_config.decoder_ffn_dim,
        num_layers=hf_config.decoder_layers,
        tie_output=bool(hf_config.tie_word_embeddings),
        final_logits_bias=True,
        **stack,
    )
    config = Seq2SeqConfig("transformer", "transformer", encoder, decoder, shared)
    check_pair(config)
    return config


def _check_config_matches(hf_config: Any, config: Seq2SeqConfig) -> None:
    expected = marian_to_config(hf_config)  # scan_layers and dtype are free fields
    wrong = [
        f"{name}={getattr(config, name)!r} (needs {getattr(expected, name)!r})"
        for name in ("encoder_type", "decoder_type", "share_embeddings")
        if getattr(config, name) != getattr(expected, name)
    ]
    if not wrong:
        for side in ("encoder", "decoder"):
            ours, needed = getattr(config, side), getattr(expected, side)
            if type(ours) is not type(needed):
                wrong.append(f"{side} is a {type(ours).__name__} (needs {type(needed).__name__})")
                continue
            wrong += [
                f"{side}.{field.name}={getattr(ours, field.name)!r} "
                f"(needs {getattr(needed, field.name)!r})"
                for field in dataclasses.fields(needed)
                if field.name not in _FREE_FIELDS
                and getattr(ours, field.name) != getattr(needed, field.name)
            ]
    if wrong:
        raise ValueError(
            f"config does not describe this Marian model: {'; '.join(wrong)}. Build it with "
            "marian_to_config(hf_model.config) (only dropout rates, scan_layers, remat_policy, "
            "dtype and max_position may differ, per stack)."
        )


def _numpy_state(hf_model: Any) -> dict[str, np.ndarray]:
    """Every tensor of the model as a float32 numpy array, keyed by its state-dict name."""
    state = {k: v.detach().float().cpu().numpy() for k, v in hf_model.state_dict().items()}
    missing = [k for k in ("final_logits_bias", "lm_head.weight") if k not in state]
    if missing:
        raise ValueError(
            f"hf_model has no {', '.join(missing)}: pass a MarianMTModel (with its LM head), "
            f"not a {type(hf_model).__name__}."
        )
    return state


def _check_positions(state: dict[str, np.ndarray], hf_config: Any) -> None:
    table = sinusoidal_table(hf_config.max_position_embeddings, hf_config.d_model)
    for stack in ("encoder", "decoder"):
        hf_table = state[f"model.{stack}.embed_positions.weight"]
        if hf_table.shape != table.shape or not np.allclose(hf_table, table, atol=_POSITION_ATOL):
            raise ValueError(
                f"model.{stack}.embed_positions is not Marian's sinusoidal table (sin half, "
                "cos half, from position 0), which s2s_jax recomputes; a model with other "
                "position embeddings cannot be bridged."
            )


def _same(state: dict[str, np.ndarray], a: str, b: str, fix: str) -> None:
    if a in state and b in state and not np.array_equal(state[a], state[b]):
        raise ValueError(f"The config ties {a} to {b} but their weights differ: {fix}.")


def _dense(state: dict[str, np.ndarray], name: str, out_shape: tuple[int, ...] = ()) -> Params:
    """A torch Linear (``y = x W^T + b``) as a DenseGeneral with outputs split to ``out_shape``."""
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    shape = out_shape or weight.shape[:1]
    return {"kernel": weight.T.reshape(weight.shape[1], *shape), "bias": bias.reshape(shape)}


def _norm(state: dict[str, np.ndarray], name: str) -> Params:
    return {"scale": state[f"{name}.weight"], "bias": state[f"{name}.bias"]}


def _attention(
    state: dict[str, np.ndarray], name: str, config: TransformerConfig, projections: tuple
) -> Params:
    """q/k/v as ``[embed, heads, head_dim]`` (HF's view splits outputs head-major) and out as
    ``[heads, head_dim, embed]``."""
    heads = (config.num_heads, config.head_size)
    torch_names = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
    params = {p: _dense(state, f"{name}.{torch_names[p]}", heads) for p in projections}
    out = _dense(state, f"{name}.out_proj")
    params["out"] = {"kernel": out["kernel"].reshape(*heads, config.d_model), "bias": out["bias"]}
    return params


def _mlp(state: dict[str, np.ndarray], name: str) -> Params:
    return {"wi": _dense(state, f"{name}.fc1"), "wo": _dense(state, f"{name}.fc2")}


def _encoder_layer(state: dict[str, np.ndarray], i: int, config: TransformerConfig) -> Params:
    name = f"model.encoder.layers.{i}"
    return {
        "self_attention": _attention(state, f"{name}.self_attn", config, ("query", "key", "value")),
        "self_attention_norm": _norm(state, f"{name}.self_attn_layer_norm"),
        "mlp": _mlp(state, name),
        "mlp_norm": _norm(state, f"{name}.final_layer_norm"),
    }


def _decoder_layer(state: dict[str, np.ndarray], i: int, config: TransformerConfig) -> Params:
    name = f"model.decoder.layers.{i}"
    return {
        "self_attention": _attention(state, f"{name}.self_attn", config, ("query", "key", "value")),
        "self_attention_norm": _norm(state, f"{name}.self_attn_layer_norm"),
        # Cross-attention keys/values live on the decoder for all layers (see _cross_kv).
        "cross_attention": _attention(state, f"{name}.encoder_attn", config, ("query",)),
        "cross_attention_norm": _norm(state, f"{name}.encoder_attn_layer_norm"),
        "mlp": _mlp(state, name),
        "mlp_norm": _norm(state, f"{name}.final_layer_norm"),
    }


def _cross_kv(state: dict[str, np.ndarray], config: TransformerConfig, proj: str) -> Params:
    """Every decoder layer's cross-attention k or v projection: kernel ``[embed, layers, heads,
    head_dim]``, bias ``[layers, heads, head_dim]``."""
    heads = (config.num_heads, config.head_size)
    layers = [
        _dense(state, f"model.decoder.layers.{i}.encoder_attn.{proj}", heads)
        for i in range(config.num_layers)
    ]
    return {
        "kernel": np.stack([layer["kernel"] for layer in layers], axis=1),
        "bias": np.stack([layer["bias"] for layer in layers], axis=0),
    }


def _stack(layers: list[Params], scan_layers: bool) -> Params:
    """Per-layer trees in the scanned (leading "layers" axis) or unrolled layout."""
    if scan_layers:
        return {"layers": jax.tree.map(lambda *leaves: np.stack(leaves), *layers)}
    return {f"layers_{i}": layer for i, layer in enumerate(layers)}


def _embeddings(state: dict[str, np.ndarray], config: Seq2SeqConfig) -> tuple[Params, ...]:
    """``(top-level, encoder, decoder)`` params of the token tables and the logits head."""
    source, target = "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"
    top: Params = {}
    encoder: Params = {}
    decoder: Params = {}
    if config.share_embeddings:
        for tied in (source, target):
            _same(state, "model.shared.weight", tied, "re-tie them (model.tie_weights())")
        top["shared_embedding"] = {"embedding": state["model.shared.weight"]}
    else:
        encoder["embedding"] = {"embedding": state[source]}
        decoder["embedding"] = {"embedding": state[target]}
    if config.decoder.tie_output:
        _same(state, "lm_head.weight", target, "re-tie them or set tie_word_embeddings=False")
    else:
        head = state["lm_head.weight"]
        # s2s_jax's untied head has a bias; Marian's bias is final_logits_bias, so this one is 0.
        decoder["output_projection"] = {
            "kernel": head.T,
            "bias": np.zeros(head.shape[0], np.float32),
        }
    decoder["final_logits_bias"] = state["final_logits_bias"].reshape(-1)
    return top, encoder, decoder


def marian_to_params(hf_model: Any, config: Seq2SeqConfig) -> dict:
    """A ``MarianMTModel``'s weights as the flax ``params`` tree of ``registry.pair(config)``.

    Args:
      hf_model: a ``transformers.MarianMTModel`` (any dtype; weights are read as float32).
      config: from ``marian_to_config(hf_model.config, ...)``; each stack's ``scan_layers``
        picks its layout (``layers`` with a leading layer axis, or ``layers_<i>``).

    Returns:
      The unboxed params tree of float32 numpy arrays, ``{"encoder": {embedding, layers},
      "decoder": {embedding, cross_key, cross_value, layers, output_projection,
      final_logits_bias}}`` (``shared_embedding`` at the top instead of the two ``embedding``
      tables when shared; ``output_projection`` only when untied): apply it as
      ``registry.pair(config).apply({"params": params}, inputs, decoder_inputs,
      inputs_mask=..., train=False)``.

    Raises:
      ValueError: the model cannot be bridged (see ``marian_to_config``), ``config`` does not
        describe it, its position tables are not Marian's sinusoids, or weights the config
        ties differ.
    """
    _check_config_matches(hf_model.config, config)
    state = _numpy_state(hf_model)
    _check_positions(state, hf_model.config)
    enc, dec = config.encoder, config.decoder
    top, encoder, decoder = _embeddings(state, config)
    encoder_layers = [_encoder_layer(state, i, enc) for i in range(enc.num_layers)]
    decoder_layers = [_decoder_layer(state, i, dec) for i in range(dec.num_layers)]
    return {
        **top,
        "encoder": {**encoder, **_stack(encoder_layers, enc.scan_layers)},
        "decoder": {
            **decoder,
            "cross_key": _cross_kv(state, dec, "k_proj"),
            "cross_value": _cross_kv(state, dec, "v_proj"),
            **_stack(decoder_layers, dec.scan_layers),
        },
    }


def from_marian(hf_model: Any, *, scan_layers: bool = True) -> tuple[Seq2SeqConfig, dict]:
    """``(config, params)`` of the s2s_jax Transformer pair equivalent to ``hf_model``.

    Args:
      hf_model: a ``transformers.MarianMTModel`` using s2s_jax's special ids.
      scan_layers: scanned or unrolled layer stacks.

    Returns:
      ``marian_to_config(hf_model.config, scan_layers=...)`` and ``marian_to_params``'s tree;
      ``registry.pair(config)`` is the module.
    """
    config = marian_to_config(hf_model.config, scan_layers=scan_layers)
    return config, marian_to_params(hf_model, config)
