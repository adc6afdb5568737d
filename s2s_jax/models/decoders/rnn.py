"""The recurrent decoder: stacked LSTM/GRU cells with attention over any encoder's outputs.

One decoder-step module per wiring does all the decoder's work for one time step on
``[batch, beam, ...]`` activations. Teacher forcing scans it over time with beam dim 1 and
``decode_step`` calls it once, so both share the same parameters and code.

Wirings (``RNNDecoderConfig.attention``):
  * ``"none"``: Cho et al. (2014): the encoder's final top-layer hidden state (the context
    vector; the mean encoder output for encoders without final states) is concatenated to
    every decoder input and to the output layer's input.
  * ``"bahdanau"``: the previous top hidden state queries additive attention; the context
    joins the RNN input.
  * Luong (``"luong_dot"``, ``"luong_general"``, ``"luong_concat"``, ``"multihead"``): the
    current top hidden state queries; ``a_t = tanh(W_c [c_t; h_t])`` feeds the output layer and,
    with input feeding, the next step's input.

Initial state: a recurrent encoder's final states when its cell matches (layer i from encoder
layer ``min(i, last)``, through a Dense+tanh bridge when the sizes differ, e.g. bidirectional);
otherwise (a Transformer or another cell) a Dense+tanh of the mean encoder output per layer.

Dropout (train only) acts between stacked recurrent layers and on the features entering the
vocabulary projection; the input-fed ``a_t`` is the undropped vector.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models.encoders.rnn import EMBED_INIT_STD, reject_packing
from s2s_jax.models.frontends import token_embedding
from s2s_jax.models.rnn import Carry, StackedCells, cell_type, logical_dense
from s2s_jax.models.rnn_attention import ATTENTIONS
from s2s_jax.models.rnn_config import RNNDecoderConfig
from s2s_jax.models.types import DTYPES, Array, Cache, Encoded, Memory, dtypes_of, masked_mean

StepOutput = tuple[Cache, tuple[Array, Array]]  # (cache, (features, attention weights))


class _DecoderStep(nn.Module):
    """Shared plumbing of the decoder steps.

    Subclasses implement ``prepare(encoded) -> memory`` and
    ``__call__(cache, inputs, memory, *, train) -> (cache, (features, weights))`` where inputs
    are embedded tokens ``[batch, beam, embed]``, features ``[batch, beam, hidden]`` (the input
    of the vocabulary projection) and weights ``[batch, beam, src_len]`` float32.
    """

    config: RNNDecoderConfig

    @property
    def parallel(self) -> bool:
        """True where teacher forcing can run without a step loop (``sequence``)."""
        return False

    def _dtypes(self) -> dict[str, Any]:
        return dict(dtypes_of(self.config))

    def _cells(self) -> StackedCells:
        cfg = self.config
        return StackedCells(
            cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.dropout, **self._dtypes()
        )

    def _dense(self, use_bias: bool = True) -> nn.Dense:
        size = self.config.hidden_size
        return logical_dense(size, ("mlp", "hidden"), use_bias=use_bias, **self._dtypes())

    def init_cache(self, carry: tuple[Carry, ...]) -> Cache:
        """The cache before the first step; carry leaves are ``[batch, 1, hidden]``."""
        return {"carry": carry}


class ContextDecoderStep(_DecoderStep):
    """Plain context-vector decoder (no attention)."""

    def setup(self) -> None:
        self.cells = self._cells()
        self.output_hidden = self._dense()

    def prepare(self, encoded: Encoded) -> Memory:
        """Memory: the context vector ``[batch, memory]`` and the source mask.

        The context is a recurrent encoder's final top-layer hidden state, or the mean of the
        encoder outputs over the source for encoders without final states.
        """
        if "final" in encoded:
            context = encoded["final"][-1][-1]
        else:
            context = masked_mean(encoded["outputs"], encoded["mask"])
        return {"context": context.astype(DTYPES[self.config.dtype]), "mask": encoded["mask"]}

    def __call__(self, cache: Cache, inputs: Array, memory: Memory, *, train: bool) -> StepOutput:
        """One step; see ``_DecoderStep`` for shapes."""
        batch_beam = inputs.shape[:2]
        context = jnp.broadcast_to(
            memory["context"][:, None, :], batch_beam + memory["context"].shape[-1:]
        )
        rnn_input = jnp.concatenate([inputs, context], axis=-1)
        carry, hidden = self.cells(cache["carry"], rnn_input, train=train)
        features = jnp.tanh(self.output_hidden(jnp.concatenate([hidden, context], axis=-1)))
        weights = jnp.zeros(batch_beam + memory["mask"].shape[-1:], jnp.float32)
        return {"carry": carry}, (features, weights)


class BahdanauDecoderStep(_DecoderStep):
    """Additive attention queried by the previous top hidden state (Bahdanau et al. 2015)."""

    def setup(self) -> None:
        self.cells = self._cells()
        self.attention = ATTENTIONS["bahdanau"](self.config.hidden_size, **self._dtypes())
        self.output_hidden = self._dense()

    def prepare(self, encoded: Encoded) -> Memory:
        """Memory from the attention's ``prepare`` (precomputed ``U keys``)."""
        return self.attention.prepare(encoded["outputs"], encoded["mask"])

    def __call__(self, cache: Cache, inputs: Array, memory: Memory, *, train: bool) -> StepOutput:
        """One step; see ``_DecoderStep`` for shapes."""
        query = cache["carry"][-1][-1]  # h_{t-1} of the top layer
        context, weights = self.attention(query, memory)
        rnn_input = jnp.concatenate([inputs, context], axis=-1)
        carry, hidden = self.cells(cache["carry"], rnn_input, train=train)
        features = jnp.tanh(self.output_hidden(jnp.concatenate([hidden, context], axis=-1)))
        return {"carry": carry}, (features, weights)


class LuongDecoderStep(_DecoderStep):
    """Luong et al. (2015) global attention, optionally with input feeding."""

    def setup(self) -> None:
        cfg = self.config
        self.cells = self._cells()
        # Only multi-head attention has a head count; the others take the shared fields.
        heads = {"num_heads": cfg.num_heads} if cfg.attention == "multihead" else {}
        self.attention = ATTENTIONS[cfg.attention](cfg.hidden_size, **heads, **self._dtypes())
        self.attentional = self._dense(use_bias=False)  # W_c of the paper has no bias

    def prepare(self, encoded: Encoded) -> Memory:
        """Memory from the attention's ``prepare`` (e.g. precomputed ``W keys``)."""
        return self.attention.prepare(encoded["outputs"], encoded["mask"])

    def init_cache(self, carry: tuple[Carry, ...]) -> Cache:
        """Adds ``feed`` ``[batch, 1, hidden]`` (a_0 = 0) when input feeding."""
        cache = {"carry": carry}
        if self.config.input_feeding:
            cache["feed"] = jnp.zeros_like(carry[-1][-1])
        return cache

    def __call__(self, cache: Cache, inputs: Array, memory: Memory, *, train: bool) -> StepOutput:
        """One step; see ``_DecoderStep`` for shapes."""
        feeding = self.config.input_feeding
        rnn_input = jnp.concatenate([inputs, cache["feed"]], axis=-1) if feeding else inputs
        carry, hidden = self.cells(cache["carry"], rnn_input, train=train)
        context, weights = self.attention(hidden, memory)
        attentional = jnp.tanh(self.attentional(jnp.concatenate([context, hidden], axis=-1)))
        new_cache = {"carry": carry, "feed": attentional} if feeding else {"carry": carry}
        return new_cache, (attentional, weights)

    @property
    def parallel(self) -> bool:
        """Without input feeding, teacher forcing needs no step loop around the attention."""
        return not self.config.input_feeding

    def sequence(
        self, cache: Cache, inputs: Array, memory: Memory, *, train: bool, unroll: int = 1
    ) -> StepOutput:
        """Teacher forcing over ``inputs`` ``[batch, tgt_len, 1, embed]`` at once (``parallel``).

        The LSTM stack runs the sequence with its input projections hoisted out of the time
        scan; attention and the attentional layer then see all target positions in one batch
        (as the beam axis). Same maths as scanning ``__call__``; outputs ``[batch, tgt_len, 1,
        ...]`` like the scan's.
        """
        if not self.parallel:
            raise ValueError("LuongDecoderStep.sequence needs input_feeding=False.")
        carry, hidden = self.cells(
            cache["carry"], inputs, train=train, over_time=True, unroll=unroll
        )
        hidden = hidden[:, :, 0]
        context, weights = self.attention(hidden, memory)
        attentional = jnp.tanh(self.attentional(jnp.concatenate([context, hidden], axis=-1)))
        return {"carry": carry}, (attentional[:, :, None], weights[:, :, None])


DECODER_STEPS: dict[str, type[_DecoderStep]] = {
    "none": ContextDecoderStep,
    "bahdanau": BahdanauDecoderStep,
    "luong_dot": LuongDecoderStep,
    "luong_general": LuongDecoderStep,
    "luong_concat": LuongDecoderStep,
    "multihead": LuongDecoderStep,
}


class Bridge(nn.Module):
    """Dense+tanh from bidirectional final states ``[batch, 2*hidden]`` to ``[batch, hidden]``.

    Attributes:
      hidden_size: decoder hidden size.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carries: tuple[Carry, ...]) -> tuple[Carry, ...]:
        """Maps every component of every layer's carry with its own Dense+tanh."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bridged = []
        for layer, carry in enumerate(carries):
            dense = [
                logical_dense(
                    self.hidden_size, ("embed", "hidden"), name=f"layer_{layer}_{i}", **kw
                )
                for i in range(len(carry))
            ]
            bridged.append(tuple(jnp.tanh(d(x)) for d, x in zip(dense, carry, strict=True)))
        return tuple(bridged)


def _scan_decoder(
    step: _DecoderStep, cache: Cache, inputs: Array, memory: Memory, train: bool, unroll: int = 1
) -> StepOutput:
    """Teacher-forced decoding: the step scanned over axis 1 of ``[batch, tgt_len, 1, embed]``."""

    def body(step, cache, inputs_t, memory):
        return step(cache, inputs_t, memory, train=train)

    scan = nn.scan(
        body,
        variable_broadcast="params",
        split_rngs={"params": False, "dropout": True},
        in_axes=(1, nn.broadcast),
        out_axes=1,
        unroll=unroll,
    )
    return scan(step, cache, inputs, memory)


class MeanBridge(nn.Module):
    """Initial decoder carries from the mean encoder output: one Dense+tanh per carry part.

    Attributes:
      hidden_size: decoder hidden size.
      num_layers: decoder layers.
      num_parts: carry components per layer (LSTM: 2, GRU: 1).
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    num_layers: int
    num_parts: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mean: Array) -> tuple[Carry, ...]:
        """``mean`` ``[batch, memory]`` -> per-layer carries with leaves ``[batch, hidden]``."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return tuple(
            tuple(
                jnp.tanh(
                    logical_dense(
                        self.hidden_size, ("embed", "hidden"), name=f"layer_{layer}_{i}", **kw
                    )(mean)
                )
                for i in range(self.num_parts)
            )
            for layer in range(self.num_layers)
        )


class RecurrentDecoder(nn.Module):
    """Recurrent decoder over any encoder's outputs, implementing the decoder side of the pair.

    Attributes:
      config: its hyperparameters.
      shared_embedding: the target table shared with the encoder, or None for its own.
    """

    config: RNNDecoderConfig
    shared_embedding: nn.Module | None = None

    def setup(self) -> None:
        cfg = self.config
        kw = dtypes_of(cfg)
        if self.shared_embedding is None:
            self.embedding = make_embedding(cfg)
        self.num_parts = len(cell_type(cfg.cell).zero_carry((1,), 1, jnp.float32))
        self.bridge = Bridge(cfg.hidden_size, **kw)  # params only when called
        self.mean_bridge = MeanBridge(cfg.hidden_size, cfg.num_layers, self.num_parts, **kw)
        self.step = DECODER_STEPS[cfg.attention](cfg)
        self.output_dropout = nn.Dropout(cfg.dropout)
        self.output_proj = logical_dense(cfg.vocab_size, ("hidden", "vocab"), **kw)

    def _embed(self, ids: Array) -> Array:
        table = self.embedding if self.shared_embedding is None else self.shared_embedding
        return table(ids)

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
        """Teacher-forced decoding.

        Args:
          encoded: from any encoder, unpacked (a packed source raises ValueError).
          decoder_inputs: ``[batch, tgt_len]`` int32, targets shifted right (BOS first).
          train: enables dropout.
          targets_segmentation, targets_position: must be None (no packing for recurrences).
          return_attention: also return the attention weights.

        Returns:
          logits ``[batch, tgt_len, vocab]`` float32, and with return_attention the weights
          ``[batch, tgt_len, src_len]`` (zeros for attention="none").
        """
        reject_packing(
            "RecurrentDecoder",
            inputs_segmentation=encoded.get("segmentation"),  # a source encoded packed
            targets_segmentation=targets_segmentation,
            targets_position=targets_position,
        )
        memory = self.step.prepare(encoded)
        cache = self.step.init_cache(self._initial_carry(encoded))
        inputs = self._embed(decoder_inputs)[:, :, None, :]  # beam dim 1
        unroll = self.config.unroll
        if self.step.parallel:
            _, (features, weights) = self.step.sequence(
                cache, inputs, memory, train=train, unroll=unroll
            )
        else:
            _, (features, weights) = _scan_decoder(self.step, cache, inputs, memory, train, unroll)
        logits = self._logits(features[:, :, 0], train)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return (logits, weights[:, :, 0]) if return_attention else logits

    def init_decode(self, encoded: Encoded, max_length: int) -> tuple[Memory, Cache]:
        """Memory ``[batch, ...]`` and the initial cache (leaves ``[batch, 1, ...]``).

        ``max_length`` is validated but otherwise unused: a recurrent cache does not grow.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length}.")
        reject_packing("RecurrentDecoder", inputs_segmentation=encoded.get("segmentation"))
        return self.step.prepare(encoded), self.step.init_cache(self._initial_carry(encoded))

    def decode_step(self, memory: Memory, ids: Array, cache: Cache) -> tuple[Array, Cache]:
        """One deterministic step: ``ids`` ``[batch, beam]`` -> logits ``[batch, beam, vocab]``."""
        cache, (features, _) = self.step(cache, self._embed(ids), memory, train=False)
        return self._logits(features, train=False), cache

    def _initial_carry(self, encoded: Encoded) -> tuple[Carry, ...]:
        """Per-layer carries with leaves ``[batch, 1, hidden]`` (see the module docstring)."""
        cfg = self.config
        finals = encoded.get("final")
        if finals is not None and len(finals[0]) == self.num_parts:
            picked = tuple(finals[min(i, len(finals) - 1)] for i in range(cfg.num_layers))
            if picked[0][0].shape[-1] != cfg.hidden_size:
                picked = self.bridge(picked)
        else:
            picked = self.mean_bridge(masked_mean(encoded["outputs"], encoded["mask"]))
        dtype = DTYPES[cfg.dtype]
        return jax.tree.map(lambda x: x[:, None].astype(dtype), picked)

    def _logits(self, features: Array, train: bool) -> Array:
        features = self.output_dropout(features, deterministic=not train)
        return self.output_proj(features).astype(jnp.float32)


def make_embedding(config: RNNDecoderConfig) -> nn.Embed:
    """The decoder's token table (also the shared table when embeddings are shared)."""
    return token_embedding(
        config.vocab_size, config.embed_dim, init_std=EMBED_INIT_STD, **dtypes_of(config)
    )
