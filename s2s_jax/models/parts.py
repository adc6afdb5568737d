"""The part configs by type name, and the config keys each type has; JAX-free.

``config.py`` builds ``model.encoder`` / ``model.decoder`` sections from here without loading
any layer code (or JAX); ``registry.py`` maps the same names to the linen modules, and a test
checks that both registries name the same configs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from s2s_jax.models.rnn_config import RNNDecoderConfig, RNNEncoderConfig
from s2s_jax.models.transformer_config import TransformerDecoderConfig, TransformerEncoderConfig

ENCODER_CONFIGS: dict[str, type] = {
    "rnn": RNNEncoderConfig,
    "transformer": TransformerEncoderConfig,
}
DECODER_CONFIGS: dict[str, type] = {
    "rnn": RNNDecoderConfig,
    "transformer": TransformerDecoderConfig,
}
CONFIGS = {"encoder": ENCODER_CONFIGS, "decoder": DECODER_CONFIGS}

# Filled in by registry.build_model, never set in a config: sizes come from the data, dtypes
# from ``model.dtype`` / ``model.param_dtype``.
INJECTED = ("vocab_size", "input_features", "dtype", "param_dtype")


def part_defaults(side: str, type_name: str) -> dict[str, Any]:
    """``{"type": type_name, key: default, ...}``: the config keys of a registered part."""
    configs = CONFIGS[side]
    if type_name not in configs:
        raise ValueError(
            f"Unknown model.{side}.type {type_name!r}; registered {side}s: {', '.join(configs)}."
        )
    fields = dataclasses.fields(configs[type_name])
    return {"type": type_name} | {f.name: f.default for f in fields if f.name not in INJECTED}
