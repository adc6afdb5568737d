"""The Transformer decoder: target embedding, causal self-attention + cross-attention, logits.

Layout choices:
  * The cross-attention key/value projections of all layers are one parameter ``[memory,
    layers, heads, head_dim]``, so ``init_decode`` computes every layer's keys in one einsum and
    teacher forcing shares the code path with ``decode_step``. The memory may come from any
    encoder (its width need not be ``d_model``).
  * Step-by-step state: memory leaves ``[batch, ...]`` (never tiled per beam); cache: one
    ``StepCache`` per layer (self-attention buffers written in place; beam search reorders only
    their row table) and the position counter ``[b, beam]`` int32. Generation runs the
    unrolled twin of a scanned stack (``Seq2Seq.for_decoding``), so a step never slices or
    restacks a per-layer axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models.attention_kernel import AttentionMask, key_lengths
from s2s_jax.models.frontends import token_embedding
from s2s_jax.models.step_cache import empty_cache, memory_step_layout
from s2s_jax.models.tied_output import tied_logits
from s2s_jax.models.transformer_config import TransformerDecoderConfig, check_length
from s2s_jax.models.transformer_layers import (
    DECODER_IN_AXES,
    DECODER_OUT_AXES,
    DecoderLayer,
    apply_layers,
    layer_stack,
    mask_bias,
    projection,
    segment_mask,
)
from s2s_jax.models.transformer_stack import (
    Stack,
    embedding_init_std,
    resolve_positions,
    segmentation_pair,
)
from s2s_jax.models.types import DTYPES, Array, Cache, Encoded, Memory, dtypes_of


def make_embedding(config: TransformerDecoderConfig) -> nn.Embed:
    """The decoder's token table (also the shared table when embeddings are shared)."""
    return token_embedding(
        config.vocab_size, config.d_model, init_std=embedding_init_std(config), **dtypes_of(config)
    )


class TransformerDecoder(Stack):
    """Transformer decoder over any encoder's outputs.

    Attributes:
      config: its hyperparameters.
      shared_embedding: the target table shared with the encoder, or None for its own.
    """

    config: TransformerDecoderConfig
    shared_embedding: nn.Module | None = None

    def setup(self):
        cfg = self.config
        if self.shared_embedding is None:
            self.embedding = make_embedding(cfg)
        self._setup_stack(bidirectional=False)
        kv = dict(
            features=(cfg.num_layers, cfg.num_heads, cfg.head_size),
            kernel_axes=("embed", "layers", "heads", "kv"),
            bias_axes=("layers", "heads", "kv"),
        )
        self.cross_key = projection(cfg, **kv)
        self.cross_value = projection(cfg, **kv)
        self.layers = layer_stack(
            cfg, DecoderLayer, cfg.num_layers, DECODER_IN_AXES, DECODER_OUT_AXES
        )
        if not cfg.tie_output:
            self.output_projection = projection(
                cfg, cfg.vocab_size, kernel_axes=("embed", "vocab"), bias_axes=("vocab",)
            )
        if cfg.final_logits_bias:
            init = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",))
            self.logits_bias = self.param(
                "final_logits_bias", init, (cfg.vocab_size,), DTYPES[cfg.param_dtype]
            )

    @property
    def _table(self) -> nn.Module:
        return self.embedding if self.shared_embedding is None else self.shared_embedding

    def _embed(self, ids: Array) -> Array:
        return self._scaled(self._table(ids))

    def _logits(self, y: Array) -> Array:
        cfg = self.config
        if cfg.tie_output:  # as nn.Embed.attend, with a lighter backward pass
            table = self._table
            y, embedding = table.promote_dtype(y, table.embedding, dtype=table.dtype)
            logits = tied_logits(y, embedding).astype(jnp.float32)
        else:
            logits = self.output_projection(y).astype(jnp.float32)
        if cfg.final_logits_bias:
            logits = logits + self.logits_bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

    def memory_kv(self, outputs: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values of every layer.

        Args: outputs ``[batch, src_len, memory]`` from any encoder.

        Returns: keys, values ``[batch, layers, src_len, heads, head_dim]``.
        """
        keys, values = (jnp.moveaxis(p(outputs), 2, 1) for p in (self.cross_key, self.cross_value))
        return keys, values

    def __call__(
        self,
        encoded: Encoded,
        decoder_inputs: Array,
        *,
        train: bool,
        targets_segmentation: Array | None = None,
        targets_position: Array | None = None,
        return_attention: bool = False,
    ) -> Array | tuple[Array, Array]:
        """Teacher-forced logits.

        Args:
          encoded: from any encoder.
          decoder_inputs: ``[batch, tgt_len]`` int32, BOS first (BOS first in every segment
            when packed, see ``data.packing.shift_right_packed``).
          train: enables dropout (needs a "dropout" rng).
          targets_segmentation: None, or ``[batch, tgt_len]`` int segment ids; given exactly
            when the source was encoded packed. Self-attention is then causal within a segment
            and cross-attention sees only the source tokens of the same segment.
          targets_position: None, or ``[batch, tgt_len]`` int positions.
          return_attention: also return the last layer's cross-attention, head-averaged.

        Returns:
          logits ``[batch, tgt_len, vocab]`` float32, and with ``return_attention`` the
          weights ``[batch, tgt_len, src_len]``.
        """
        check_length(self.config, decoder_inputs.shape[1], "The target")
        segmentation = segmentation_pair(encoded, targets_segmentation)
        positions = resolve_positions(
            decoder_inputs, targets_segmentation, targets_position, "targets"
        )
        keys, values = self.memory_kv(encoded["outputs"])
        # Causality follows the row index: within a segment it orders tokens as positions do,
        # and segments never see each other anyway.
        index = jnp.arange(decoder_inputs.shape[1])[None]
        self_allowed = index[:, None, :] <= index[:, :, None]  # [1, queries, keys]
        cross_allowed = encoded["mask"][:, None, :]  # [batch, 1, src_len]
        if segmentation is not None:
            tgt_segmentation, src_segmentation = segmentation
            self_allowed = self_allowed & segment_mask(tgt_segmentation, tgt_segmentation)
            cross_allowed = cross_allowed & segment_mask(tgt_segmentation, src_segmentation)
        self_bias, cross_bias = self._biases((positions, positions), (self_allowed, cross_allowed))
        unpacked = segmentation is None
        self_mask = AttentionMask(
            self_bias, causal=True, exact=unpacked and self.relative_bias is None
        )
        cross_mask = AttentionMask(
            cross_bias,
            key_lengths(encoded["mask"]),
            exact=unpacked,
            need_weights=return_attention,
        )
        y = self._prepare(self._embed(decoder_inputs), positions, not train)
        args = (not train, self_mask, positions, (keys, values), cross_mask, None)
        y, (_, weights) = apply_layers(self.layers, DECODER_IN_AXES, DECODER_OUT_AXES, y, *args)
        logits = self._logits(self._finish(y))
        return (logits, weights[-1]) if return_attention else logits

    def init_decode(self, encoded: Encoded, max_length: int) -> tuple[Memory, Cache]:
        """Per-source state for step-by-step decoding.

        Returns:
          memory ``{"mask", "keys", "values"}`` with keys/values one ``[batch, heads,
          head_dim, src_len]`` per layer (``memory_step_layout``); cache ``{"layers",
          "index"}``: one beam-1 ``StepCache`` per layer (zeros) and ``[batch, 1]`` int32 (the
          next position, 0).
        """
        cfg = self.config
        check_length(cfg, max_length, "Decoding (max_length)")
        if "segmentation" in encoded:
            raise ValueError(
                "init_decode got a packed source (encoded with inputs_segmentation): step-by-step "
                "decoding works on unpacked batches, so encode the sources without packing."
            )
        keys, values = map(memory_step_layout, self.memory_kv(encoded["outputs"]))
        memory = {"mask": encoded["mask"], "keys": keys, "values": values}
        batch = encoded["mask"].shape[0]
        buffer = empty_cache(batch, cfg.num_heads, cfg.head_size, max_length, keys[0].dtype)
        layers = (buffer,) * cfg.num_layers
        return memory, {"layers": layers, "index": jnp.zeros((batch, 1), jnp.int32)}

    def decode_step(self, memory: Memory, ids: Array, cache: Cache) -> tuple[Array, Cache]:
        """One deterministic step for every hypothesis.

        The layers run one after the other even when their params are scanned: each layer's
        buffers are a separate cache leaf, so a step never slices or restacks a per-layer axis
        (XLA would copy the whole cache for that on every step).

        Args:
          memory: from ``init_decode``.
          ids: ``[batch, beam]`` int32, the previous tokens.
          cache: ``init_decode``'s, tiled and reordered by ``decoding.hypotheses``.

        Returns:
          logits ``[batch, beam, vocab]`` float32 and the advanced cache.
        """
        index, layer_caches = cache["index"], cache["layers"]
        slots = jnp.arange(layer_caches[0].slots)[None]
        causal = slots[:, None, :] <= index[:, :, None]  # [batch, beam, slots]
        self_bias, cross_bias = self._biases((index, slots), (causal, memory["mask"][:, None, :]))
        y = self._prepare(self._embed(ids), index, True)
        new_caches = []
        for i, layer_cache in enumerate(layer_caches):
            kv = (memory["keys"][i], memory["values"][i])
            y, (layer_cache, _) = self._layer(i)(
                y, True, self_bias, index, kv, cross_bias, layer_cache
            )
            new_caches.append(layer_cache)
        logits = self._logits(self._finish(y))
        return logits, {"layers": tuple(new_caches), "index": index + 1}

    def _layer(self, i: int) -> Callable[..., Any]:
        """Layer ``i`` alone as a function, sliced out of the scanned stack when scanned.

        Slicing happens on every step; ``Seq2Seq.for_decoding`` avoids it by unrolling.
        """
        if isinstance(self.layers, Sequence):
            return self.layers[i]
        params = jax.tree.map(lambda p: p[i], self.layers.variables["params"])
        return functools.partial(DecoderLayer(self.config, parent=None).apply, {"params": params})

    def _biases(self, positions, allowed) -> tuple[Array, Array]:
        """Additive self- and cross-attention biases.

        ``positions`` is (queries ``[b or 1, q]``, self-attention keys ``[b or 1, k]``) and
        ``allowed`` the boolean (self, cross) masks ``[b or 1, q or 1, keys]``.
        """
        self_bias = mask_bias(allowed[0])  # [b or 1, 1, queries, keys]
        if self.relative_bias is not None:
            self_bias = self_bias + self.relative_bias(*positions)
        return self_bias, mask_bias(allowed[1])
