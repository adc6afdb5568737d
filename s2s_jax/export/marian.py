"""An s2s_jax Transformer pair -> Hugging Face ``MarianMTModel``: the inverse of ``models/marian``.

A pair maps when it is what ``models.marian.marian_to_config`` builds from a Marian model:
a "transformer" encoder reading tokens and a "transformer" decoder, both post-LN with
LayerNorm epsilon 1e-5, sinusoidal positions, an ungated relu / gelu / swish MLP, heads of
``d_model / num_heads``, and one ``d_model``, head count, MLP size, activation and embedding
scale for both stacks. Embeddings may be shared or separate, the output head tied or not (its
bias is folded into Marian's ``final_logits_bias``), the stacks' depths may differ. Dropout
rates (training only; the encoder's are written), layer scanning, remat, dtypes and attention
kernels do not change what a trained model computes in float32, so they are free. Anything else
is refused with a ValueError naming the first field that does not map and why.

``to_marian`` checks its own work: the Marian weights it writes are bridged back with
``models.marian.marian_to_params`` and must give the params exactly (bit for bit), so no
parameter can be dropped or misplaced silently.

torch and transformers are imported when a model is built: s2s_jax imports without them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.models.marian import MARIAN_NORM_EPSILON, marian_to_config, marian_to_params
from s2s_jax.models.seq2seq import Seq2SeqConfig

# s2s_jax activation -> Hugging Face activation_function (the inverse of marian_config's table).
MARIAN_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish"}
# Fields that do not change a trained model's float32 eval outputs (or, for the relative-bias
# sizes, are unused with sinusoidal positions); dropout is written from the encoder.
_FREE_FIELDS = (
    "dropout", "attention_dropout", "activation_dropout", "scan_layers", "remat_policy", "dtype",
    "param_dtype", "max_position", "attention_kernel", "relative_buckets",
    "relative_max_distance", "head_dim",
)  # fmt: skip
# Per stack: (field, test of a mappable value, why another value does not map).
_STACK_CHECKS = (
    ("pre_norm", lambda c: not c.pre_norm,
     "Marian is post-LN (each sublayer's LayerNorm comes after its residual add)"),
    ("norm", lambda c: c.norm == "layernorm", "Marian normalises with LayerNorm"),
    ("norm_epsilon", lambda c: c.norm_epsilon == MARIAN_NORM_EPSILON,
     "Marian's LayerNorm epsilon is fixed at 1e-5 (torch's default); another epsilon "
     "computes other outputs"),
    ("position", lambda c: c.position == "sinusoidal",
     "Marian adds the fixed sinusoidal table; learned, rope and t5_relative positions have no "
     "Marian equivalent"),
    ("activation", lambda c: c.activation in MARIAN_ACTIVATIONS,
     f"Marian's MLP is ungated with one of {', '.join(MARIAN_ACTIVATIONS)}"),
    ("head_dim", lambda c: c.head_dim in (0, c.d_model // c.num_heads),
     "Marian's head size is d_model / num_heads"),
)  # fmt: skip
# Fields MarianConfig (or the bridge and CTranslate2's loader, for heads and MLP size) holds
# once for both stacks.
_SHARED_FIELDS = ("d_model", "num_heads", "mlp_dim", "activation", "scale_embeddings")

Params = dict[str, Any]


def _refuse(field: str, value: Any, why: str) -> None:
    raise ValueError(f"model.{field}={value!r} does not map onto Marian: {why}.")


def check_mappable(config: Seq2SeqConfig) -> None:
    """Raises ValueError naming the first field of ``config`` that Marian cannot express."""
    for side in ("encoder", "decoder"):
        kind = getattr(config, f"{side}_type")
        if kind != "transformer":
            _refuse(f"{side}.type", kind, f"Marian's {side} is a Transformer")
    enc, dec = config.encoder, config.decoder
    if enc.input != "tokens":
        _refuse("encoder.input", enc.input, "Marian's encoder reads token ids")
    for side, stack in (("encoder", enc), ("decoder", dec)):
        for field, ok, why in _STACK_CHECKS:
            if not ok(stack):
                _refuse(f"{side}.{field}", getattr(stack, field), why)
    for field in _SHARED_FIELDS:
        if getattr(enc, field) != getattr(dec, field):
            _refuse(
                f"decoder.{field}",
                getattr(dec, field),
                f"it differs from model.encoder.{field}={getattr(enc, field)!r} and Marian "
                "takes one value for both stacks",
            )


def marian_config(config: Seq2SeqConfig) -> Any:
    """The ``transformers.MarianConfig`` of a mappable pair (s2s_jax's ids: pad 0, start 1, eos 2).

    Raises:
      ValueError: ``config`` does not map (``check_mappable``).
    """
    check_mappable(config)
    from transformers import MarianConfig  # optional dependency: imported only when used

    enc, dec = config.encoder, config.decoder
    hf_config = MarianConfig(
        vocab_size=enc.vocab_size,
        decoder_vocab_size=dec.vocab_size,
        d_model=enc.d_model,
        encoder_layers=enc.num_layers,
        decoder_layers=dec.num_layers,
        encoder_attention_heads=enc.num_heads,
        decoder_attention_heads=dec.num_heads,
        encoder_ffn_dim=enc.mlp_dim,
        decoder_ffn_dim=dec.mlp_dim,
        max_position_embeddings=max(enc.max_position, dec.max_position),
        dropout=enc.dropout,
        attention_dropout=enc.attention_dropout,
        activation_dropout=enc.activation_dropout,
        activation_function=MARIAN_ACTIVATIONS[enc.activation],
        scale_embedding=enc.scale_embeddings,
        share_encoder_decoder_embeddings=config.share_embeddings,
        tie_word_embeddings=dec.tie_output,
        pad_token_id=PAD_ID,
        decoder_start_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        # s2s_jax's decoders end a hypothesis with EOS at the length cap.
        forced_eos_token_id=EOS_ID,
    )
    _check_round_trip(hf_config, config)
    return hf_config


def _differences(config: Seq2SeqConfig, reference: Seq2SeqConfig) -> list[str]:
    """Fields of ``config`` that differ from ``reference``'s, free fields (and the decoder's
    logits-bias flag: a missing bias is written as zeros) aside."""
    wrong = [
        name
        for name in ("encoder_type", "decoder_type", "share_embeddings")
        if getattr(config, name) != getattr(reference, name)
    ]
    for side in ("encoder", "decoder"):
        ours, theirs = getattr(config, side), getattr(reference, side)
        skip = {*_FREE_FIELDS, "final_logits_bias"}
        wrong += [
            f"{side}.{f.name}={getattr(ours, f.name)!r} (bridges back as "
            f"{getattr(theirs, f.name)!r})"
            for f in dataclasses.fields(theirs)
            if f.name not in skip and getattr(ours, f.name, None) != getattr(theirs, f.name)
        ]
    return wrong


def _check_round_trip(hf_config: Any, config: Seq2SeqConfig) -> None:
    """The forward bridge must rebuild ``config`` (free fields aside): a guard on the checks."""
    wrong = _differences(config, marian_to_config(hf_config))
    if wrong:
        raise ValueError(f"model.{wrong[0]}: does not map onto Marian.")


def _linear(kernel: np.ndarray, bias: np.ndarray, in_dims: int = 1) -> dict[str, np.ndarray]:
    """A DenseGeneral (``in_dims`` input axes) as a torch Linear: ``weight [out, in]``, ``bias``."""
    inputs = int(np.prod(kernel.shape[:in_dims]))
    return {"weight": kernel.reshape(inputs, -1).T, "bias": bias.reshape(-1)}


def _norm(params: Params) -> dict[str, np.ndarray]:
    return {"weight": params["scale"], "bias": params["bias"]}


def _layers(stack: Params, count: int) -> Iterator[Params]:
    """Each layer's params, from the scanned (leading layer axis) or the unrolled layout."""
    for i in range(count):
        if "layers" in stack:
            yield jax.tree.map(lambda x, i=i: x[i], stack["layers"])
        else:
            yield stack[f"layers_{i}"]


def _attention(p: Params, names: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    torch_names = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
    out = {torch_names[n]: _linear(p[n]["kernel"], p[n]["bias"]) for n in names}
    out["out_proj"] = _linear(p["out"]["kernel"], p["out"]["bias"], in_dims=2)
    return out


def _common(p: Params) -> dict[str, dict[str, np.ndarray]]:
    """A layer's self-attention, its norm and the MLP, as torch modules."""
    self_attention = _attention(p["self_attention"], ("query", "key", "value"))
    modules = {f"self_attn.{name}": linear for name, linear in self_attention.items()}
    modules["self_attn_layer_norm"] = _norm(p["self_attention_norm"])
    modules["fc1"] = _linear(p["mlp"]["wi"]["kernel"], p["mlp"]["wi"]["bias"])
    modules["fc2"] = _linear(p["mlp"]["wo"]["kernel"], p["mlp"]["wo"]["bias"])
    modules["final_layer_norm"] = _norm(p["mlp_norm"])
    return modules


def _decoder_layer(p: Params, decoder: Params, i: int) -> dict[str, dict[str, np.ndarray]]:
    modules = _common(p)
    cross = _attention(p["cross_attention"], ("query",))
    modules.update({f"encoder_attn.{name}": linear for name, linear in cross.items()})
    for proj, name in (("k_proj", "cross_key"), ("v_proj", "cross_value")):
        # kernel [embed, layers, heads, head_dim], bias [layers, heads, head_dim]
        kv = decoder[name]
        modules[f"encoder_attn.{proj}"] = _linear(kv["kernel"][:, i], kv["bias"][i])
    modules["encoder_attn_layer_norm"] = _norm(p["cross_attention_norm"])
    return modules


def _embeddings(params: Params, config: Seq2SeqConfig) -> dict[str, np.ndarray]:
    """Token tables, the LM head and ``final_logits_bias`` (the untied head's bias folded in)."""
    dec = params["decoder"]
    out = {}
    if config.share_embeddings:
        source = target = out["model.shared.weight"] = params["shared_embedding"]["embedding"]
    else:
        source, target = (params[s]["embedding"]["embedding"] for s in ("encoder", "decoder"))
    out["model.encoder.embed_tokens.weight"] = source
    out["model.decoder.embed_tokens.weight"] = target
    bias = np.zeros(config.decoder.vocab_size, np.float32)
    if config.decoder.final_logits_bias:
        bias = bias + dec["final_logits_bias"]
    if config.decoder.tie_output:
        out["lm_head.weight"] = target
    else:
        out["lm_head.weight"] = dec["output_projection"]["kernel"].T
        bias = bias + dec["output_projection"]["bias"]
    out["final_logits_bias"] = bias[None]
    return out


def marian_state(config: Seq2SeqConfig, params: Params) -> dict[str, np.ndarray]:
    """Every Marian weight but the position tables, float32, keyed by its state-dict name.

    Args:
      config: a mappable pair (``check_mappable``).
      params: its unboxed flax params (any float dtype; scanned or unrolled stacks).
    """
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    state = _embeddings(params, config)
    for side in ("encoder", "decoder"):
        layers = _layers(params[side], getattr(config, side).num_layers)
        for i, layer in enumerate(layers):
            if side == "encoder":
                modules = _common(layer)
            else:
                modules = _decoder_layer(layer, params["decoder"], i)
            for module, tensors in modules.items():
                for name, value in tensors.items():
                    state[f"model.{side}.layers.{i}.{module}.{name}"] = value
    return state


def _expected_params(params: Params, config: Seq2SeqConfig) -> Params:
    """What the forward bridge gives back for ``params``: float32, the untied head's bias moved
    into ``final_logits_bias`` (present even when the pair has none)."""
    out = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    decoder = dict(out["decoder"])
    bias = decoder.get("final_logits_bias", np.zeros(config.decoder.vocab_size, np.float32))
    if not config.decoder.tie_output:
        head = dict(decoder["output_projection"])
        bias, head["bias"] = bias + head["bias"], np.zeros_like(head["bias"])
        decoder["output_projection"] = head
    decoder["final_logits_bias"] = bias
    return {**out, "decoder": decoder}


def _verify(hf_model: Any, config: Seq2SeqConfig, params: Params) -> None:
    bridged_config = marian_to_config(hf_model.config)
    canonical = dataclasses.replace(
        bridged_config,
        **{
            side: dataclasses.replace(
                getattr(bridged_config, side), scan_layers=getattr(config, side).scan_layers
            )
            for side in ("encoder", "decoder")
        },
    )
    back = marian_to_params(hf_model, canonical)
    expected = _expected_params(params, config)
    same = jax.tree.structure(back) == jax.tree.structure(expected) and all(
        jax.tree.leaves(jax.tree.map(np.array_equal, back, expected))
    )
    if not same:
        raise RuntimeError(
            "to_marian wrote weights that do not bridge back to the params (a bug in "
            "s2s_jax.export.marian): the exported model would not compute what s2s_jax does."
        )


def to_marian(config: Seq2SeqConfig, params: Params) -> Any:
    """The ``transformers.MarianMTModel`` (eval mode, float32) computing what the pair computes.

    Args:
      config: the resolved pair (``Components.model_config``).
      params: its unboxed params tree (as restored from a checkpoint).

    Returns:
      The model, with s2s_jax's special ids (pad 0, decoder start <s> = 1, eos 2); its logits
      equal ``registry.pair(config).apply(...)``'s in float32 up to summation order.

    Raises:
      ValueError: ``config`` does not map onto Marian (the message names the first field).
    """
    hf_config = marian_config(config)
    import torch
    from transformers import MarianMTModel

    hf_model = MarianMTModel(hf_config).eval()  # its random weights are all overwritten
    current = hf_model.state_dict()
    ours = marian_state(config, params)
    unmapped = sorted(k for k in current if k not in ours and "embed_positions" not in k)
    extra = sorted(k for k in ours if k not in current)
    wrong = sorted(k for k in ours if k in current and tuple(current[k].shape) != ours[k].shape)
    if unmapped or extra or wrong:
        raise RuntimeError(
            f"to_marian does not cover this model (a bug in s2s_jax.export.marian): unmapped "
            f"{unmapped[:3]}, unknown {extra[:3]}, mis-shaped {wrong[:3]}."
        )
    state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in ours.items()}
    hf_model.load_state_dict({**current, **state}, strict=True)
    _verify(hf_model, config, params)
    return hf_model


def save_marian(
    directory: str | os.PathLike,
    config: Seq2SeqConfig,
    params: Params,
    src_vocab: Any,
    tgt_vocab: Any,
    *,
    num_beams: int = 1,
) -> Any:
    """Writes the Marian model (config, weights, generation defaults) and its tokenizer files.

    Args:
      directory: an existing, empty directory (``s2s export`` passes its staging directory).
      config, params: the pair and its params (see ``to_marian``).
      src_vocab, tgt_vocab: the run's tokenizers (``export/tokenizers``).
      num_beams: ``generate``'s default beam width.

    Returns:
      The ``MarianMTModel`` written.
    """
    from transformers.utils import logging as hf_logging

    from s2s_jax.export.tokenizers import write_marian_tokenizer

    model = to_marian(config, params)
    model.generation_config.num_beams = num_beams
    model.generation_config.max_length = model.config.max_position_embeddings
    hf_logging.disable_progress_bar()  # "Writing model shards" on every save
    model.save_pretrained(str(directory))
    write_marian_tokenizer(directory, src_vocab, tgt_vocab)
    return model
