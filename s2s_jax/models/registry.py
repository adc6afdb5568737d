"""Model registry: maps ``config.model.family`` to a module class and its frozen config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from s2s_jax.models.rnn_seq2seq import RNNConfig, RNNSeq2Seq
from s2s_jax.models.transformer import Transformer, TransformerConfig

# family -> (module class, frozen config class)
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "rnn": (RNNSeq2Seq, RNNConfig),
    "transformer": (Transformer, TransformerConfig),
}


def model_config(section: Mapping[str, Any], src_vocab_size: int, tgt_vocab_size: int):
    """Builds the family's frozen config from the run config's ``model`` section.

    Only the fields the family declares are taken, so settings of other families are ignored.
    """
    family = section["family"]
    if family not in MODELS:
        raise ValueError(f"Unknown model family {family!r}; valid: {', '.join(MODELS)}.")
    config_cls = MODELS[family][1]
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: v for k, v in section.items() if k in names}
    kwargs.update(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
    return config_cls(**kwargs)


def build_model(section: Mapping[str, Any], src_vocab_size: int, tgt_vocab_size: int):
    """Returns ``(module, frozen_config)`` for the run config's ``model`` section."""
    config = model_config(section, src_vocab_size, tgt_vocab_size)
    return MODELS[section["family"]][0](config), config


def describe(config) -> dict[str, Any]:
    """The resolved model config as a flat JSON-safe dict (stored in checkpoints)."""
    return {"family": _family_of(config), **dataclasses.asdict(config)}


def _family_of(config) -> str:
    for family, (_, config_cls) in MODELS.items():
        if isinstance(config, config_cls):
            return family
    raise ValueError(f"{type(config).__name__} is not a registered model config.")
