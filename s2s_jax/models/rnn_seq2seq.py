"""The RNN encoder–decoder family: config, decoder steps and the top model.

One decoder-step module per wiring does all the decoder's work for one time step on
``[batch, beam, ...]`` activations. ``decode`` scans it over time with beam dim 1 (teacher
forcing) and ``decode_step`` calls it once, so both share the same parameters and code.

Wirings (``RNNConfig.attention``):
  * ``"none"``: Cho et al. (2014): the encoder's final top-layer hidden state (the context
    vector) is concatenated to every decoder input and to the output layer's input.
  * ``"bahdanau"``: the previous top hidden state queries additive attention; the context
    joins the RNN input.
  * Luong (``"luong_dot"``, ``"luong_general"``, ``"luong_concat"``, ``"multihead"``): the
    current top hidden state queries; ``a_t = tanh(W_c [c_t; h_t])`` feeds the output layer and,
    with input feeding, the next step's input.

Dropout (train only) acts between stacked recurrent layers and on the features entering the
vocabulary projection; the input-fed ``a_t`` is the undropped vector.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import PAD_ID
from s2s_jax.models.rnn import CELLS, Carry, RNNEncoder, StackedCells, logical_dense
from s2s_jax.models.rnn_attention import ATTENTIONS

Array = jax.Array
Cache = dict[str, Any]
Encoded = dict[str, Any]
Memory = dict[str, Array]
StepOutput = tuple[Cache, tuple[Array, Array]]  # (cache, (features, attention weights))

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """Hyperparameters of ``RNNSeq2Seq``.

    Attributes:
      src_vocab_size: source vocabulary size (ids include the specials, PAD is 0).
      tgt_vocab_size: target vocabulary size.
      cell: a key of ``rnn.CELLS`` ("lstm" | "gru").
      embed_dim: token embedding size (source and target).
      hidden_size: hidden size of every recurrent layer (per direction in the encoder).
      encoder_layers: stacked encoder layers.
      decoder_layers: stacked decoder layers; layer i starts from encoder layer
        ``min(i, encoder_layers - 1)``.
      bidirectional: bidirectional encoder (outputs ``2 * hidden_size``; a Dense+tanh bridge
        maps its final states to the decoder's size).
      attention: a key of ``DECODER_STEPS``.
      num_heads: heads of "multihead" attention (must divide hidden_size).
      input_feeding: Luong input feeding (ignored by "none" and "bahdanau").
      dropout: dropout rate between recurrent layers and before the output projection.
      dtype: compute dtype name, a key of ``DTYPES``.
      param_dtype: parameter storage dtype name, a key of ``DTYPES``.
      unroll: time steps per loop iteration of the encoder's and the teacher-forced decoder's
        time scans (``lax.scan``'s ``unroll``); 1 keeps one step per iteration. Same maths:
        larger values trade compile time and program size for fewer loop iterations.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    cell: str = "lstm"
    embed_dim: int = 64
    hidden_size: int = 128
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional: bool = False
    attention: str = "luong_general"
    num_heads: int = 4
    input_feeding: bool = True
    dropout: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    unroll: int = 1

    def __post_init__(self) -> None:
        _check_choice("cell", self.cell, CELLS)
        _check_choice("attention", self.attention, DECODER_STEPS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("param_dtype", self.param_dtype, DTYPES)
        sizes = ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden_size", "num_heads")
        for name in (*sizes, "encoder_layers", "decoder_layers", "unroll"):
            _check_positive(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.attention == "multihead" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads "
                f"{self.num_heads}; pick num_heads dividing hidden_size."
            )
        if self.attention == "luong_dot" and self.bidirectional:
            raise ValueError(
                "luong_dot needs encoder outputs of the decoder's size, but a bidirectional "
                "encoder outputs 2*hidden_size; use luong_general or bidirectional=False."
            )

    @property
    def compute_dtype(self) -> Any:
        """The jnp dtype computations run in."""
        return DTYPES[self.dtype]

    @property
    def storage_dtype(self) -> Any:
        """The jnp dtype parameters are stored in."""
        return DTYPES[self.param_dtype]


def reject_packing(**packing: Array | None) -> None:
    """Raises if any packing array (segment ids or positions) is given to an RNN model.

    A recurrent state would carry one example into the next within a packed row.
    """
    given = [name for name, value in packing.items() if value is not None]
    if given:
        raise ValueError(
            f"RNNSeq2Seq got {', '.join(given)}, but packing is supported by the Transformer "
            "family only; use length buckets (data.pack_length=0) for RNN models."
        )


def _check_choice(field: str, value: str, registry: dict[str, Any]) -> None:
    if value not in registry:
        raise ValueError(f"Unknown {field} {value!r}; valid names are {sorted(registry)}.")


def _check_positive(field: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value}.")


class _DecoderStep(nn.Module):
    """Shared plumbing of the decoder steps.

    Subclasses implement ``prepare(encoded) -> memory`` and
    ``__call__(cache, inputs, memory, *, train) -> (cache, (features, weights))`` where inputs
    are embedded tokens ``[batch, beam, embed]``, features ``[batch, beam, hidden]`` (the input
    of the vocabulary projection) and weights ``[batch, beam, src_len]`` float32.
    """

    config: RNNConfig

    @property
    def parallel(self) -> bool:
        """True where teacher forcing can run without a step loop (``sequence``)."""
        return False

    def _dtypes(self) -> dict[str, Any]:
        return {"dtype": self.config.compute_dtype, "param_dtype": self.config.storage_dtype}

    def _cells(self) -> StackedCells:
        cfg = self.config
        return StackedCells(
            cfg.cell, cfg.hidden_size, cfg.decoder_layers, cfg.dropout, **self._dtypes()
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
        """Memory: the context vector ``[batch, dirs * hidden]`` and the source mask."""
        context = encoded["final"][-1][-1].astype(self.config.compute_dtype)
        return {"context": context, "mask": encoded["mask"]}

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


class RNNSeq2Seq(nn.Module):
    """Recurrent encoder–decoder implementing the ``s2s_jax.models`` interface.

    Attributes:
      config: the model's hyperparameters.
    """

    config: RNNConfig

    def setup(self) -> None:
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype)
        embed_init = nn.with_logical_partitioning(
            nn.initializers.normal(stddev=1.0), ("vocab", "embed")
        )
        self.src_embed = nn.Embed(
            cfg.src_vocab_size, cfg.embed_dim, embedding_init=embed_init, **kw
        )
        self.tgt_embed = nn.Embed(
            cfg.tgt_vocab_size, cfg.embed_dim, embedding_init=embed_init, **kw
        )
        self.encoder = RNNEncoder(
            cfg.cell, cfg.hidden_size, cfg.encoder_layers, cfg.bidirectional, cfg.dropout,
            unroll=cfg.unroll, **kw,
        )  # fmt: skip
        self.bridge = Bridge(cfg.hidden_size, **kw) if cfg.bidirectional else None
        self.step = DECODER_STEPS[cfg.attention](cfg)
        self.output_dropout = nn.Dropout(cfg.dropout)
        self.output_proj = logical_dense(cfg.tgt_vocab_size, ("hidden", "vocab"), **kw)

    def encode(
        self,
        inputs: Array,
        *,
        train: bool,
        inputs_segmentation: Array | None = None,
        inputs_position: Array | None = None,
    ) -> Encoded:
        """Encodes a source batch.

        Args:
          inputs: ``[batch, src_len]`` int32, PAD_ID is padding.
          train: enables dropout.
          inputs_segmentation, inputs_position: must be None (packing is Transformer-only;
            present so every family shares the interface).

        Returns:
          ``{"outputs": [batch, src_len, dirs*hidden] (zero at PAD), "mask": [batch, src_len]
          bool, "final": per-layer carries with leaves [batch, dirs*hidden]}``.
        """
        reject_packing(inputs_segmentation=inputs_segmentation, inputs_position=inputs_position)
        mask = inputs != PAD_ID
        outputs, finals = self.encoder(self.src_embed(inputs), mask, train=train)
        return {"outputs": outputs, "mask": mask, "final": finals}

    def decode(
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
          encoded: the output of ``encode``.
          decoder_inputs: ``[batch, tgt_len]`` int32, targets shifted right (BOS first).
          train: enables dropout.
          targets_segmentation, targets_position: must be None (see ``encode``).
          return_attention: also return the attention weights.

        Returns:
          logits ``[batch, tgt_len, tgt_vocab]`` float32, and with return_attention the weights
          ``[batch, tgt_len, src_len]`` (zeros for attention="none").
        """
        reject_packing(targets_segmentation=targets_segmentation, targets_position=targets_position)
        memory = self.step.prepare(encoded)
        cache = self.step.init_cache(self._initial_carry(encoded))
        inputs = self.tgt_embed(decoder_inputs)[:, :, None, :]  # beam dim 1
        if self.step.parallel:
            _, (features, weights) = self.step.sequence(
                cache, inputs, memory, train=train, unroll=self.config.unroll
            )
        else:
            _, (features, weights) = _scan_decoder(
                self.step, cache, inputs, memory, train, self.config.unroll
            )
        logits = self._logits(features[:, :, 0], train)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return (logits, weights[:, :, 0]) if return_attention else logits

    def for_decoding(self, params: Any) -> tuple["RNNSeq2Seq", Any]:
        """The ``(model, params)`` pair to decode with: this model as it is."""
        return self, params

    def init_decode(self, encoded: Encoded, max_length: int) -> tuple[Memory, Cache]:
        """Memory ``[batch, ...]`` and the initial cache (leaves ``[batch, 1, ...]``).

        ``max_length`` is validated but otherwise unused: a recurrent cache does not grow.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length}.")
        return self.step.prepare(encoded), self.step.init_cache(self._initial_carry(encoded))

    def decode_step(self, memory: Memory, ids: Array, cache: Cache) -> tuple[Array, Cache]:
        """One deterministic decoder step.

        Args:
          memory: from ``init_decode`` (leaves ``[batch, ...]``, never tiled per beam).
          ids: ``[batch, beam]`` int32, the previous tokens.
          cache: leaves ``[batch, beam, ...]``.

        Returns:
          ``(logits [batch, beam, tgt_vocab] float32, new cache)``.
        """
        cache, (features, _) = self.step(cache, self.tgt_embed(ids), memory, train=False)
        return self._logits(features, train=False), cache

    def __call__(
        self,
        inputs: Array,
        decoder_inputs: Array,
        *,
        train: bool,
        inputs_segmentation: Array | None = None,
        targets_segmentation: Array | None = None,
        inputs_position: Array | None = None,
        targets_position: Array | None = None,
    ) -> Array:
        """``decode(encode(inputs), decoder_inputs)``: logits ``[batch, tgt_len, vocab]``.

        The packing arguments must be None (see ``encode``).
        """
        reject_packing(
            inputs_segmentation=inputs_segmentation,
            targets_segmentation=targets_segmentation,
            inputs_position=inputs_position,
            targets_position=targets_position,
        )
        return self.decode(self.encode(inputs, train=train), decoder_inputs, train=train)

    def _initial_carry(self, encoded: Encoded) -> tuple[Carry, ...]:
        """Decoder layer i starts from encoder layer min(i, last); leaves ``[batch, 1, hidden]``."""
        finals = encoded["final"]
        picked = tuple(finals[min(i, len(finals) - 1)] for i in range(self.config.decoder_layers))
        if self.bridge is not None:
            picked = self.bridge(picked)
        dtype = self.config.compute_dtype
        return jax.tree.map(lambda x: x[:, None].astype(dtype), picked)

    def _logits(self, features: Array, train: bool) -> Array:
        features = self.output_dropout(features, deterministic=not train)
        return self.output_proj(features).astype(jnp.float32)
