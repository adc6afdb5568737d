"""Encoder front ends: what turns a batch's ``inputs`` into ``[batch, length, features]``.

An encoder stack names its front end with its ``input`` key: ``"tokens"`` embeds int32 ids
``[batch, length]``, ``"features"`` projects float frames ``[batch, length, input_features]``.
A new input kind is one builder here plus its name in the configs' ``INPUT_NAMES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from s2s_jax.models.types import Array


def token_embedding(
    vocab_size: int, features: int, *, init_std: float, dtype: Any, param_dtype: Any
) -> nn.Embed:
    """An embedding table ``[vocab, features]`` with N(0, init_std^2) rows."""
    if vocab_size < 1:
        raise ValueError(
            "A token front end needs the vocabulary size, got 0: the data has no source "
            "vocabulary (non-token inputs?); use the encoder input 'features' for float frames."
        )
    init = nn.with_logical_partitioning(nn.initializers.normal(init_std), ("vocab", "embed"))
    return nn.Embed(vocab_size, features, embedding_init=init, dtype=dtype, param_dtype=param_dtype)


class FeatureProjection(nn.Module):
    """A linear projection of float frames ``[b, s, input_features]`` to ``[b, s, features]``.

    Attributes:
      input_features: features per input frame (checked against the batch: a mismatch is a
        clear error, not a shape failure deep in XLA).
      features: output size.
      dtype, param_dtype: compute and storage dtypes.
    """

    input_features: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frames: Array) -> Array:
        """Projects ``frames`` ``[batch, length, input_features]``."""
        if frames.ndim != 3 or frames.shape[-1] != self.input_features:
            raise ValueError(
                f"The 'features' front end expects float frames [batch, length, "
                f"{self.input_features}], got an array of shape {tuple(frames.shape)}: the "
                "data's frames and the model's input_features must agree."
            )
        kernel = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "embed"))
        bias = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",))
        dense = nn.Dense(
            self.features, kernel_init=kernel, bias_init=bias, dtype=self.dtype,
            param_dtype=self.param_dtype, name="projection",
        )  # fmt: skip
        return dense(frames.astype(self.dtype))


def feature_projection(
    input_features: int, features: int, *, init_std: float, dtype: Any, param_dtype: Any
) -> FeatureProjection:
    """The ``FeatureProjection`` front end (``init_std`` is for token tables only)."""
    del init_std
    if input_features < 1:
        raise ValueError(
            "The 'features' front end needs input_features > 0 (features per frame), got "
            f"{input_features}: the data gives token ids; use the encoder input 'tokens'."
        )
    return FeatureProjection(input_features, features, dtype=dtype, param_dtype=param_dtype)


# input name -> builder(size of the input: vocabulary or frame features, output size, ...)
FRONTENDS: dict[str, Callable[..., nn.Module]] = {
    "tokens": token_embedding,
    "features": feature_projection,
}


def make_frontend(config: Any, features: int, init_std: float, **dtypes: Any) -> nn.Module:
    """The front end an encoder config names with ``input`` (call inside ``setup``)."""
    size = config.vocab_size if config.input == "tokens" else config.input_features
    return FRONTENDS[config.input](size, features, init_std=init_std, **dtypes)


def example_inputs(config: Any, src_len: int) -> tuple[Array, Array]:
    """Batch-1 dummy ``(inputs, inputs_mask)`` for the front end ``config.input`` names."""
    if config.input == "tokens":
        inputs = jnp.ones((1, src_len), jnp.int32)
    else:
        inputs = jnp.zeros((1, src_len, config.input_features), jnp.float32)
    return inputs, jnp.ones((1, src_len), bool)
