"""Transformer encoder-decoder (Vaswani et al. 2017 and its T5 / Marian variants).

Implements the model interface of ``s2s_jax.models``. Layout choices:
  * Each stack is one ``nn.scan`` over a (optionally rematerialised) layer; parameters get a
    leading "layers" axis. ``scan_layers=False`` unrolls the same layer in a Python loop;
    ``transformer_layers.stack_layer_params`` / ``unstack_layer_params`` convert the params.
  * The cross-attention key/value projections of all decoder layers are one parameter
    ``[embed, layers, heads, head_dim]`` on the decoder, so ``init_decode`` computes every
    layer's encoder keys in one einsum and ``decode`` shares the code path with ``decode_step``.
  * Packed batches (``data.packing``): segment ids keep every attention within its example
    (encoder self-attention, causal decoder self-attention, cross-attention), and positions
    restart per segment for the absolute tables, RoPE and the T5 bias. Without segment ids the
    model sees one example per row (positions ``0..length-1``, padding masks only).
  * Step-by-step state: memory leaves ``[batch, ...]`` (never tiled per beam); cache: one
    ``transformer_layers.StepCache`` per layer (self-attention buffers written in place; beam
    search reorders only their row table) and the position counter ``[b, beam]`` int32.
    Generation runs the unrolled twin of a scanned model (``Transformer.for_decoding``), so a
    step never slices or restacks a per-layer axis.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import PAD_ID
from s2s_jax.models.positions import (
    POSITION_TABLES,
    AbsolutePositionEmbedding,
    RelativePositionBias,
    segment_positions,
)
from s2s_jax.models.tied_output import tied_logits
from s2s_jax.models.transformer_layers import (
    ACTIVATIONS,
    DECODER_IN_AXES,
    DECODER_OUT_AXES,
    DTYPES,
    ENCODER_IN_AXES,
    NORMS,
    REMAT_POLICIES,
    DecoderLayer,
    EncoderLayer,
    apply_layers,
    empty_cache,
    layer_stack,
    make_norm,
    mask_bias,
    memory_step_layout,
    projection,
    segment_mask,
    unstack_layer_params,
)

Array = jax.Array
PyTree = Any

POSITIONS = (*POSITION_TABLES, "rope", "t5_relative")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of ``Transformer``; invalid values raise ``ValueError`` on creation.

    Attributes:
      src_vocab_size, tgt_vocab_size: vocabulary sizes (PAD_ID 0 included).
      d_model, num_heads, mlp_dim: model width, attention heads, MLP hidden size.
      head_dim: per-head size; 0 means ``d_model // num_heads`` (see ``head_size``).
      encoder_layers, decoder_layers: stack depths.
      activation: a key of ``ACTIVATIONS``; the ``*glu`` ones are gated (two input projections).
      dropout, attention_dropout, activation_dropout: residual/embedding, attention-weight and
        MLP-hidden dropout rates, active only with ``train=True``.
      norm: "layernorm" or "rmsnorm". pre_norm: False gives post-LN (original / Marian).
      norm_epsilon: variance epsilon of every norm (PyTorch's LayerNorm, hence Marian, uses 1e-5).
      position: "sinusoidal" | "learned" (tables of ``max_position`` rows added to the
        embeddings), "rope" (rotary, self-attention only) or "t5_relative" (bias buckets:
        ``relative_buckets``, ``relative_max_distance``; one table per stack).
      share_embeddings: one table for source and target (equal vocab sizes required).
      tie_output: logits use the target embedding transposed. scale_embeddings: multiply
        embeddings by sqrt(d_model). final_logits_bias: learned logits bias (as in Marian).
      scan_layers: ``nn.scan`` the stacks (False: Python loop, same maths).
      remat_policy: a key of ``REMAT_POLICIES``.
      dtype, param_dtype: compute and storage dtype names (``DTYPES``); logits are float32.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    head_dim: int = 0
    mlp_dim: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 2
    activation: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    norm: str = "layernorm"
    norm_epsilon: float = 1e-6
    pre_norm: bool = True
    position: str = "sinusoidal"
    max_position: int = 256
    relative_buckets: int = 32
    relative_max_distance: int = 128
    share_embeddings: bool = False
    tie_output: bool = True
    scale_embeddings: bool = True
    final_logits_bias: bool = False
    scan_layers: bool = True
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        _validate_choices(self)
        _validate_sizes(self)

    @property
    def head_size(self) -> int:
        """Per-head query/key/value size."""
        return self.head_dim or self.d_model // self.num_heads


_CHOICES = {
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "position": POSITIONS,
    "remat_policy": REMAT_POLICIES,
    "dtype": DTYPES,
    "param_dtype": DTYPES,
}
_POSITIVE = (
    "src_vocab_size",
    "tgt_vocab_size",
    "d_model",
    "num_heads",
    "mlp_dim",
    "encoder_layers",
    "decoder_layers",
    "max_position",
    "relative_buckets",
    "relative_max_distance",
)
_RATES = ("dropout", "attention_dropout", "activation_dropout")


def _validate_choices(cfg: TransformerConfig) -> None:
    for field, valid in _CHOICES.items():
        value = getattr(cfg, field)
        if value not in valid:
            raise ValueError(
                f"TransformerConfig.{field}={value!r} is not supported; "
                f"choose one of: {', '.join(valid)}."
            )


def _validate_sizes(cfg: TransformerConfig) -> None:
    for field in _POSITIVE:
        if getattr(cfg, field) <= 0:
            raise ValueError(
                f"TransformerConfig.{field} must be positive, got {getattr(cfg, field)}."
            )
    for field in _RATES:
        if not 0.0 <= getattr(cfg, field) < 1.0:
            raise ValueError(
                f"TransformerConfig.{field} must be in [0, 1), got {getattr(cfg, field)}."
            )
    if cfg.norm_epsilon <= 0:
        raise ValueError(
            f"TransformerConfig.norm_epsilon must be positive, got {cfg.norm_epsilon}."
        )
    if cfg.head_dim < 0 or (cfg.head_dim == 0 and cfg.d_model % cfg.num_heads):
        raise ValueError(
            f"head_dim={cfg.head_dim} with d_model={cfg.d_model}, num_heads={cfg.num_heads}: "
            "set head_dim > 0, or use a num_heads that divides d_model (head_dim=0)."
        )
    if cfg.position == "rope" and cfg.head_size % 2:
        raise ValueError(f"position='rope' needs an even head size, got {cfg.head_size}.")
    if cfg.position == "sinusoidal" and cfg.d_model % 2:
        raise ValueError(f"position='sinusoidal' needs an even d_model, got {cfg.d_model}.")
    if cfg.relative_buckets < 4 or cfg.relative_max_distance <= cfg.relative_buckets // 2:
        raise ValueError(
            f"relative_buckets={cfg.relative_buckets}, relative_max_distance="
            f"{cfg.relative_max_distance}: need buckets >= 4 and max_distance > buckets // 2 "
            "(T5 uses 32 and 128)."
        )
    if cfg.share_embeddings and cfg.src_vocab_size != cfg.tgt_vocab_size:
        raise ValueError(
            f"share_embeddings=True needs src_vocab_size == tgt_vocab_size, got "
            f"{cfg.src_vocab_size} and {cfg.tgt_vocab_size}: use one joint vocabulary or set "
            "share_embeddings=False."
        )


def check_length(config: TransformerConfig, length: int, what: str) -> None:
    """Rejects sequences that do not fit a position table (static shapes, so before tracing)."""
    if config.position in POSITION_TABLES and length > config.max_position:
        raise ValueError(
            f"{what} has length {length} but position={config.position!r} supports at most "
            f"max_position={config.max_position}: raise max_position, shorten the sequences, "
            "or use position='rope' / 't5_relative'."
        )


def resolve_positions(
    ids: Array, segmentation: Array | None, positions: Array | None, side: str
) -> Array:
    """Positions of one side of a batch, checking the packing arrays against the tokens.

    Args:
      ids: ``[batch, length]`` int token ids.
      segmentation: None or ``[batch, length]`` int segment ids (0 = padding).
      positions: None or ``[batch, length]`` int positions.
      side: "inputs" or "targets", for error messages.

    Returns:
      ``positions`` if given; else the within-segment positions of ``segmentation``; else
      ``arange(length)`` as ``[1, length]`` (the unpacked behaviour).
    """
    for name, array in ((f"{side}_segmentation", segmentation), (f"{side}_position", positions)):
        if array is not None and array.shape != ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(array.shape)} but {side} has {tuple(ids.shape)}: "
                "packed batches give every array of a side the same [batch, length] shape."
            )
    if positions is not None:
        return positions
    if segmentation is not None:
        return segment_positions(segmentation)
    return jnp.arange(ids.shape[1])[None]


def _segmentation_pair(
    encoded: dict[str, Array], targets_segmentation: Array | None
) -> tuple[Array, Array] | None:
    """(target, source) segment ids of a packed batch, None for an unpacked one."""
    packed_source = "segmentation" in encoded
    if packed_source == (targets_segmentation is None):
        given, source = ("no ", "with") if packed_source else ("", "without")
        raise ValueError(
            f"decode got {given}targets_segmentation for a source encoded {source} "
            "inputs_segmentation: a packed batch passes both segmentations, an unpacked one "
            "neither (attention could otherwise cross examples)."
        )
    return (targets_segmentation, encoded["segmentation"]) if packed_source else None


def _absolute_positions(config: TransformerConfig) -> nn.Module | None:
    if config.position not in POSITION_TABLES:
        return None
    return AbsolutePositionEmbedding(
        kind=config.position,
        max_position=config.max_position,
        features=config.d_model,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
    )


def _relative_bias(config: TransformerConfig, bidirectional: bool) -> nn.Module | None:
    if config.position != "t5_relative":
        return None
    return RelativePositionBias(
        num_heads=config.num_heads,
        num_buckets=config.relative_buckets,
        max_distance=config.relative_max_distance,
        bidirectional=bidirectional,
        param_dtype=DTYPES[config.param_dtype],
    )


class _Stack(nn.Module):
    """What encoder and decoder stacks share: positions on the inputs and the final norm."""

    config: TransformerConfig

    def _prepare(self, x: Array, positions: Array, deterministic: bool) -> Array:
        if self.positions is not None:
            x = x + self.positions(positions)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return self.dropout(x, deterministic=deterministic)

    def _finish(self, x: Array) -> Array:
        # Post-LN layers already end in a norm; pre-LN stacks need one after the last residual.
        return self.final_norm(x) if self.config.pre_norm else x


class Encoder(_Stack):
    """Transformer encoder stack over embedded source tokens."""

    def setup(self):
        cfg = self.config
        self.positions = _absolute_positions(cfg)
        self.relative_bias = _relative_bias(cfg, bidirectional=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = layer_stack(cfg, EncoderLayer, cfg.encoder_layers, ENCODER_IN_AXES, 0)
        self.final_norm = make_norm(cfg) if cfg.pre_norm else None

    def __call__(
        self,
        x: Array,
        mask: Array,
        positions: Array,
        segmentation: Array | None,
        deterministic: bool,
    ) -> Array:
        """Args:
          x: ``[batch, src_len, embed]`` embedded source tokens.
          mask: ``[batch, src_len]`` bool (True = token).
          positions: ``[batch or 1, src_len]`` int.
          segmentation: None, or ``[batch, src_len]`` int segment ids of a packed batch
            (attention then stays within a segment).
          deterministic: disables dropout.

        Returns: ``[batch, src_len, embed]``.
        """
        allowed = mask[:, None, :]  # [batch, 1, keys]
        if segmentation is not None:
            allowed = allowed & segment_mask(segmentation, segmentation)
        bias = mask_bias(allowed)
        if self.relative_bias is not None:
            bias = bias + self.relative_bias(positions, positions)
        x = self._prepare(x, positions, deterministic)
        x, _ = apply_layers(self.layers, ENCODER_IN_AXES, 0, x, deterministic, bias, positions)
        return self._finish(x)


class Decoder(_Stack):
    """Transformer decoder stack: whole sequences (``__call__``) or one step (``step``)."""

    def setup(self):
        cfg = self.config
        self.positions = _absolute_positions(cfg)
        self.relative_bias = _relative_bias(cfg, bidirectional=False)
        self.dropout = nn.Dropout(cfg.dropout)
        kv = dict(
            features=(cfg.decoder_layers, cfg.num_heads, cfg.head_size),
            kernel_axes=("embed", "layers", "heads", "kv"),
            bias_axes=("layers", "heads", "kv"),
        )
        self.cross_key = projection(cfg, **kv)
        self.cross_value = projection(cfg, **kv)
        self.layers = layer_stack(
            cfg, DecoderLayer, cfg.decoder_layers, DECODER_IN_AXES, DECODER_OUT_AXES
        )
        self.final_norm = make_norm(cfg) if cfg.pre_norm else None

    def memory_kv(self, encoded: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values of every layer.

        Args: encoded ``[batch, src_len, embed]``.

        Returns: keys, values ``[batch, layers, src_len, heads, head_dim]``.
        """
        keys, values = (jnp.moveaxis(p(encoded), 2, 1) for p in (self.cross_key, self.cross_value))
        return keys, values

    def __call__(
        self,
        y: Array,
        keys: Array,
        values: Array,
        src_mask: Array,
        positions: Array,
        segmentation: tuple[Array, Array] | None,
        deterministic: bool,
    ) -> tuple[Array, Array]:
        """Args:
          y: ``[batch, tgt_len, embed]`` embedded decoder inputs.
          keys, values: from ``memory_kv``.
          src_mask: ``[batch, src_len]`` bool.
          positions: ``[batch or 1, tgt_len]`` int.
          segmentation: None, or the packed batch's (target ``[batch, tgt_len]``, source
            ``[batch, src_len]``) segment ids; attention then stays within a segment.
          deterministic: disables dropout.

        Returns:
          ``([batch, tgt_len, embed], last layer's cross-attention [batch, tgt_len, src_len])``.
        """
        # Causality follows the row index: within a segment it orders tokens as positions do,
        # and segments never see each other anyway.
        index = jnp.arange(y.shape[1])[None]
        self_allowed = index[:, None, :] <= index[:, :, None]  # [1, queries, keys]
        cross_allowed = src_mask[:, None, :]  # [batch, 1, src_len]
        if segmentation is not None:
            tgt_segmentation, src_segmentation = segmentation
            self_allowed = self_allowed & segment_mask(tgt_segmentation, tgt_segmentation)
            cross_allowed = cross_allowed & segment_mask(tgt_segmentation, src_segmentation)
        self_bias, cross_bias = self._biases((positions, positions), (self_allowed, cross_allowed))
        y = self._prepare(y, positions, deterministic)
        args = (deterministic, self_bias, positions, (keys, values), cross_bias, None)
        y, (_, weights) = apply_layers(self.layers, DECODER_IN_AXES, DECODER_OUT_AXES, y, *args)
        return self._finish(y), weights[-1]

    def step(
        self,
        y: Array,
        keys: Sequence[Array],
        values: Sequence[Array],
        src_mask: Array,
        cache: PyTree,
        index: Array,
    ) -> tuple[Array, PyTree]:
        """One decoding step for every hypothesis.

        The layers run one after the other even when their params are scanned: each layer's
        buffers are a separate cache leaf, so a step never slices or restacks a per-layer axis
        (XLA would copy the whole cache for that on every step).

        Args:
          y: ``[batch, beam, embed]`` embedded previous tokens.
          keys, values: per layer, ``memory_kv`` in ``memory_step_layout`` (shared by all
            beams).
          src_mask: ``[batch, src_len]`` bool.
          cache: one ``StepCache`` per layer.
          index: ``[batch, beam]`` int32, the position of ``y``.

        Returns:
          ``([batch, beam, embed], updated cache)``.
        """
        slots = jnp.arange(cache[0].slots)[None]
        causal = slots[:, None, :] <= index[:, :, None]  # [batch, beam, slots]
        self_bias, cross_bias = self._biases((index, slots), (causal, src_mask[:, None, :]))
        y = self._prepare(y, index, True)
        new_cache = []
        for i, layer_cache in enumerate(cache):
            args = (True, self_bias, index, (keys[i], values[i]), cross_bias, layer_cache)
            y, (layer_cache, _) = self._layer(i)(y, *args)
            new_cache.append(layer_cache)
        return self._finish(y), tuple(new_cache)

    def _layer(self, i: int) -> Callable[..., Any]:
        """Layer ``i`` alone as a function, sliced out of the scanned stack when scanned.

        Slicing happens on every step; ``Transformer.for_decoding`` avoids it by unrolling.
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


def _embedding(config: TransformerConfig, vocab_size: int) -> nn.Embed:
    # std d_model**-0.5: scaled by sqrt(d_model) the inputs have unit variance, and a tied output
    # projection gives unit-scale logits from normalised states (fairseq / Marian convention).
    init = nn.initializers.normal(stddev=config.d_model**-0.5)
    return nn.Embed(
        vocab_size,
        config.d_model,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
        embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")),
    )


class Transformer(nn.Module):
    """Encoder-decoder Transformer implementing the ``s2s_jax.models`` interface."""

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        if cfg.share_embeddings:
            self.shared_embedding = _embedding(cfg, cfg.src_vocab_size)
            self.source_embedding = self.target_embedding = self.shared_embedding
        else:
            self.source_embedding = _embedding(cfg, cfg.src_vocab_size)
            self.target_embedding = _embedding(cfg, cfg.tgt_vocab_size)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if not cfg.tie_output:
            self.output_projection = projection(
                cfg, cfg.tgt_vocab_size, kernel_axes=("embed", "vocab"), bias_axes=("vocab",)
            )
        if cfg.final_logits_bias:
            init = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",))
            self.logits_bias = self.param(
                "final_logits_bias", init, (cfg.tgt_vocab_size,), DTYPES[cfg.param_dtype]
            )

    def for_decoding(self, params: PyTree) -> tuple["Transformer", PyTree]:
        """The ``(model, params)`` pair to decode step by step with; call on the unbound model.

        A decoding step runs the layers one by one. With scanned layers that would slice every
        layer's params out of the stack on every step, so decoding uses the unrolled twin of the
        model with its params unstacked once (same maths, same logits).
        """
        if not self.config.scan_layers:
            return self, params
        twin = self.clone(config=dataclasses.replace(self.config, scan_layers=False))
        return twin, unstack_layer_params(params)

    def _embed(self, embedding: nn.Embed, ids: Array) -> Array:
        x = embedding(ids)
        scale = self.config.d_model**0.5 if self.config.scale_embeddings else 1.0
        return x * jnp.asarray(scale, x.dtype)

    def _logits(self, y: Array) -> Array:
        cfg = self.config
        if cfg.tie_output:  # as nn.Embed.attend, with a lighter backward pass
            shared = self.target_embedding
            y, embedding = shared.promote_dtype(y, shared.embedding, dtype=shared.dtype)
            logits = tied_logits(y, embedding).astype(jnp.float32)
        else:
            logits = self.output_projection(y).astype(jnp.float32)
        if cfg.final_logits_bias:
            logits = logits + self.logits_bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

    def encode(
        self,
        inputs: Array,
        *,
        train: bool,
        inputs_segmentation: Array | None = None,
        inputs_position: Array | None = None,
    ) -> dict[str, Array]:
        """Args:
          inputs: ``[batch, src_len]`` int32, PAD_ID padding.
          train: enables dropout (needs a "dropout" rng).
          inputs_segmentation: None, or ``[batch, src_len]`` int segment ids of a packed batch
            (1, 2, ... per example, 0 on padding); self-attention stays within a segment.
          inputs_position: None, or ``[batch, src_len]`` int positions (restarting at 0 per
            segment). Defaults: within-segment positions when packed, else 0..src_len-1.

        Returns:
          ``{"outputs": [batch, src_len, embed], "mask": [batch, src_len] bool}``, plus
          ``"segmentation"`` (``inputs_segmentation``) when packed.
        """
        check_length(self.config, inputs.shape[1], "The source")
        positions = resolve_positions(inputs, inputs_segmentation, inputs_position, "inputs")
        mask = inputs != PAD_ID
        x = self._embed(self.source_embedding, inputs)
        outputs = self.encoder(x, mask, positions, inputs_segmentation, not train)
        encoded = {"outputs": outputs, "mask": mask}
        if inputs_segmentation is not None:
            encoded["segmentation"] = inputs_segmentation
        return encoded

    def decode(
        self,
        encoded: dict[str, Array],
        decoder_inputs: Array,
        *,
        train: bool,
        targets_segmentation: Array | None = None,
        targets_position: Array | None = None,
        return_attention: bool = False,
    ) -> Array | tuple[Array, Array]:
        """Args:
          encoded: from ``encode``.
          decoder_inputs: ``[batch, tgt_len]`` int32, BOS first (BOS first in every segment
            when packed, see ``data.packing.shift_right_packed``).
          train: enables dropout (needs a "dropout" rng).
          targets_segmentation: None, or ``[batch, tgt_len]`` int segment ids; given exactly
            when ``encode`` got ``inputs_segmentation``. Self-attention is then causal within a
            segment and cross-attention sees only the source tokens of the same segment.
          targets_position: None, or ``[batch, tgt_len]`` int positions (defaults as in
            ``encode``).
          return_attention: also return the last layer's cross-attention, head-averaged.

        Returns:
          logits ``[batch, tgt_len, tgt_vocab]`` float32, and with ``return_attention`` the
          weights ``[batch, tgt_len, src_len]``.
        """
        check_length(self.config, decoder_inputs.shape[1], "The target")
        segmentation = _segmentation_pair(encoded, targets_segmentation)
        positions = resolve_positions(
            decoder_inputs, targets_segmentation, targets_position, "targets"
        )
        keys, values = self.decoder.memory_kv(encoded["outputs"])
        y = self._embed(self.target_embedding, decoder_inputs)
        y, attention = self.decoder(
            y, keys, values, encoded["mask"], positions, segmentation, not train
        )
        logits = self._logits(y)
        return (logits, attention) if return_attention else logits

    def init_decode(
        self, encoded: dict[str, Array], max_length: int
    ) -> tuple[dict[str, Array], dict[str, Any]]:
        """Per-source state for step-by-step decoding.

        Args:
          encoded: from ``encode``.
          max_length: static, the most decoder steps that will be taken.

        Returns:
          memory ``{"outputs", "mask", "keys", "values"}`` with keys/values
          one ``[batch, heads, head_dim, src_len]`` per layer (``memory_step_layout``); cache
          ``{"layers", "index"}``: one beam-1 ``StepCache`` per decoder layer (zeros) and
          ``[batch, 1]`` int32 (the next position, 0).
        """
        cfg = self.config
        check_length(cfg, max_length, "Decoding (max_length)")
        if "segmentation" in encoded:
            raise ValueError(
                "init_decode got a packed source (encoded with inputs_segmentation): step-by-step "
                "decoding works on unpacked batches, so encode the sources without packing."
            )
        keys, values = map(memory_step_layout, self.decoder.memory_kv(encoded["outputs"]))
        memory = {**encoded, "keys": keys, "values": values}
        batch = encoded["mask"].shape[0]
        buffer = empty_cache(batch, cfg.num_heads, cfg.head_size, max_length, keys[0].dtype)
        layers = (buffer,) * cfg.decoder_layers
        return memory, {"layers": layers, "index": jnp.zeros((batch, 1), jnp.int32)}

    def decode_step(
        self, memory: dict[str, Array], ids: Array, cache: dict[str, Array]
    ) -> tuple[Array, dict[str, Array]]:
        """One deterministic decoder step for every hypothesis.

        Args:
          memory: from ``init_decode`` (leaves ``[batch, ...]``).
          ids: ``[batch, beam]`` int32, the previous tokens.
          cache: ``init_decode``'s, tiled and reordered by ``decoding.hypotheses``.

        Returns:
          logits ``[batch, beam, tgt_vocab]`` float32 and the advanced cache.
        """
        y = self._embed(self.target_embedding, ids)
        y, layers = self.decoder.step(
            y, memory["keys"], memory["values"], memory["mask"], cache["layers"], cache["index"]
        )
        return self._logits(y), {"layers": layers, "index": cache["index"] + 1}

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
        """Encode then decode: logits ``[batch, tgt_len, tgt_vocab]`` float32.

        The packing arguments (``[batch, src_len]`` / ``[batch, tgt_len]`` int) are those of
        ``encode`` and ``decode``; give both segmentations for a packed batch, or neither.
        """
        encoded = self.encode(
            inputs,
            train=train,
            inputs_segmentation=inputs_segmentation,
            inputs_position=inputs_position,
        )
        return self.decode(
            encoded,
            decoder_inputs,
            train=train,
            targets_segmentation=targets_segmentation,
            targets_position=targets_position,
        )
