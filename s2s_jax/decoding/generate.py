"""Glue between a model and the model-agnostic decoders: one jitted generate function."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.decoding.beam_search import beam_search
from s2s_jax.decoding.sampling import greedy, sample


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    method: str = "greedy"  # greedy | beam | sample
    beam_size: int = 4
    alpha: float = 0.6
    nbest: int = 1
    max_length_ratio: float = 1.5
    max_length_offset: int = 5
    min_length: int = 0  # EOS is blocked until a hypothesis has this many tokens
    no_repeat_ngram_size: int = 0  # > 0: never repeat an n-gram of this size within a hypothesis
    temperature: float = 1.0  # sampling only
    top_k: int = 0  # sampling only; 0 = off
    top_p: float = 1.0  # sampling only; 1 = off
    seed: int = 0  # sampling only

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown decode method {self.method!r}; valid: {', '.join(METHODS)}.")
        if self.nbest > (self.beam_size if self.method == "beam" else 1):
            raise ValueError(
                f"nbest={self.nbest} needs beam search with beam_size >= nbest "
                f"(got method={self.method}, beam_size={self.beam_size})."
            )
        if self.min_length < 0 or self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"min_length and no_repeat_ngram_size must be >= 0 (0: off), got "
                f"{self.min_length} and {self.no_repeat_ngram_size}."
            )

    @classmethod
    def from_section(cls, section: Mapping[str, Any], **overrides) -> DecodeConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: section[k] for k in names if k in section and k != "method"}
        values["method"] = section.get("decode", "greedy")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def max_length(self, src_len: int) -> int:
        """Static decode budget for a batch whose padded source length is ``src_len``."""
        return int(math.ceil(self.max_length_ratio * src_len)) + self.max_length_offset


def _constraints(cfg: DecodeConfig) -> dict[str, int]:
    return {"min_length": cfg.min_length, "no_repeat_ngram_size": cfg.no_repeat_ngram_size}


def _beam(tokens_to_logits, cache, cfg: DecodeConfig, max_length: int, max_lengths):
    return beam_search(
        tokens_to_logits, cache, beam_size=cfg.beam_size, max_length=max_length,
        alpha=cfg.alpha, max_lengths=max_lengths, nbest=cfg.nbest, **_constraints(cfg),
    )  # fmt: skip


def _greedy(tokens_to_logits, cache, cfg: DecodeConfig, max_length: int, max_lengths):
    return greedy(
        tokens_to_logits, cache, max_length=max_length, max_lengths=max_lengths, **_constraints(cfg)
    )


def _sample(tokens_to_logits, cache, cfg: DecodeConfig, max_length: int, max_lengths):
    return sample(
        tokens_to_logits, cache, rng=jax.random.key(cfg.seed), max_length=max_length,
        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, max_lengths=max_lengths,
        **_constraints(cfg),
    )  # fmt: skip


METHODS = {"greedy": _greedy, "beam": _beam, "sample": _sample}


def _row_max_lengths(inputs_mask: jax.Array, cfg: DecodeConfig, cap: int) -> jax.Array:
    src_len = jnp.sum(inputs_mask, axis=-1)
    budget = jnp.ceil(cfg.max_length_ratio * src_len).astype(jnp.int32) + cfg.max_length_offset
    return jnp.minimum(budget, cap)


def generate(
    params: Any, inputs: jax.Array, inputs_mask: jax.Array, *, model: nn.Module, cfg: DecodeConfig
):
    """Decodes a source batch with the model's cached step function.

    ``inputs`` are ``[batch, src_len]`` token ids or ``[batch, src_len, features]`` frames and
    ``inputs_mask`` ``[batch, src_len]`` bool: the per-row decode budget
    (``max_length_ratio * length + max_length_offset``) counts the mask, never token ids.

    Returns a ``decoding.DecodeResult``: sequences [batch, nbest, max_length] int32 (EOS then PAD),
    scores [batch, nbest] float32, lengths [batch, nbest] int32.
    """
    model, params = model.for_decoding(params)
    variables = {"params": params}
    max_length = cfg.max_length(inputs_mask.shape[1])
    encoded = model.apply(variables, inputs, inputs_mask, train=False, method=model.encode)
    memory, cache = model.apply(variables, encoded, max_length, method=model.init_decode)

    def tokens_to_logits(ids, cache):
        return model.apply(variables, memory, ids, cache, method=model.decode_step)

    max_lengths = _row_max_lengths(inputs_mask, cfg, max_length)
    return METHODS[cfg.method](tokens_to_logits, cache, cfg, max_length, max_lengths)


def jit_generate(model: nn.Module, cfg: DecodeConfig):
    """``generate`` jitted; compiles once per source shape."""
    return jax.jit(functools.partial(generate, model=model, cfg=cfg))


def decoding_model(model: nn.Module, params_like: Any) -> nn.Module:
    """The model that ``model.for_decoding`` pairs with params shaped like ``params_like``.

    ``params_like`` may be abstract (``jax.ShapeDtypeStruct`` leaves): the layout is only traced,
    so no param is copied. Use it with a jitted ``model.for_decoding(params)[1]`` to prepare
    params that change between calls (the training loop's periodic evaluation).
    """
    found = []

    def layout(params):
        twin, params = model.for_decoding(params)
        found.append(twin)
        return params

    jax.eval_shape(layout, params_like)
    return found[0]


def decoder(
    model: nn.Module, params: Any, cfg: DecodeConfig
) -> Callable[[jax.Array, jax.Array], Any]:
    """``(inputs, inputs_mask) -> DecodeResult`` for params that stay fixed across calls.

    ``generate`` puts the params in the model's decoding layout (``for_decoding``) inside every
    call: for a Transformer with scanned layers that copies each decoder layer's params out of
    the stack once per batch. Here that happens once, before the first call; the jitted function
    then runs the decoding twin, whose ``for_decoding`` is the identity. Same results.
    """
    model, params = model.for_decoding(params)
    generate_fn = jit_generate(model, cfg)
    return functools.partial(generate_fn, params)
