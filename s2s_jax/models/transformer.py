"""Transformer encoder-decoder (Vaswani et al. 2017 and its T5 / Marian variants).

Implements the model interface of ``s2s_jax.models``. Layout choices:
  * Each stack is one ``nn.scan`` over a (optionally rematerialised) layer; parameters get a
    leading "layers" axis. ``scan_layers=False`` unrolls the same layer in a Python loop;
    ``transformer_layers.stack_layer_params`` / ``unstack_layer_params`` convert the params.
  * The cross-attention key/value projections of all decoder layers are one parameter
    ``[embed, layers, heads, head_dim]`` on the decoder, so ``init_decode`` computes every
    layer's encoder keys in one einsum and ``decode`` shares the code path with ``decode_step``.
  * Step-by-step state: memory leaves ``[batch, ...]`` (never tiled per beam); cache leaves
    ``[batch, beam, ...]`` holding self-attention buffers ``[b, beam, layers, max_length,
    heads, head_dim]`` and the position counter ``[b, beam]`` int32.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.data.vocab import PAD_ID
from s2s_jax.models.positions import (
    POSITION_TABLES,
    AbsolutePositionEmbedding,
    RelativePositionBias,
)
from s2s_jax.models.transformer_layers import (
    ACTIVATIONS,
    DECODER_IN_AXES,
    DECODER_OUT_AXES,
    DTYPES,
    ENCODER_IN_AXES,
    NEG_INF,
    NORMS,
    REMAT_POLICIES,
    DecoderLayer,
    EncoderLayer,
    apply_layers,
    layer_stack,
    make_norm,
    projection,
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

    def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
        """Args: x ``[batch, src_len, embed]``; mask ``[batch, src_len]`` bool (True = token).

        Returns: ``[batch, src_len, embed]``.
        """
        positions = jnp.arange(x.shape[1])[None]
        bias = jnp.where(mask, 0.0, NEG_INF)[:, None, None, :]
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
        self, y: Array, keys: Array, values: Array, src_mask: Array, deterministic: bool
    ) -> tuple[Array, Array]:
        """Args:
          y: ``[batch, tgt_len, embed]`` embedded decoder inputs.
          keys, values: from ``memory_kv``.
          src_mask: ``[batch, src_len]`` bool.
          deterministic: disables dropout.

        Returns:
          ``([batch, tgt_len, embed], last layer's cross-attention [batch, tgt_len, src_len])``.
        """
        positions = jnp.arange(y.shape[1])[None]
        y, (_, weights) = self._run(
            y, positions, positions, (keys, values), src_mask, None, deterministic
        )
        return y, weights[-1]

    def step(
        self, y: Array, keys: Array, values: Array, src_mask: Array, cache: PyTree, index: Array
    ) -> tuple[Array, PyTree]:
        """One decoding step for every hypothesis.

        Args:
          y: ``[batch, beam, embed]`` embedded previous tokens.
          keys, values: from ``memory_kv`` (shared by all beams).
          src_mask: ``[batch, src_len]`` bool.
          cache: ``{"keys", "values"}`` ``[batch, beam, layers, max_length, heads, head_dim]``.
          index: ``[batch, beam]`` int32, the position of ``y``.

        Returns:
          ``([batch, beam, embed], updated cache)``.
        """
        slots = jnp.arange(cache["keys"].shape[3])[None]
        y, (cache, _) = self._run(y, index, slots, (keys, values), src_mask, cache, True)
        return y, cache

    def _run(self, y, query_positions, key_positions, cross_kv, src_mask, cache, deterministic):
        causal = key_positions[:, None, None, :] <= query_positions[:, None, :, None]
        self_bias = jnp.where(causal, 0.0, NEG_INF)  # [b or 1, 1, queries, keys]
        if self.relative_bias is not None:
            self_bias = self_bias + self.relative_bias(query_positions, key_positions)
        cross_bias = jnp.where(src_mask, 0.0, NEG_INF)[:, None, None, :]
        y = self._prepare(y, query_positions, deterministic)
        y, outputs = apply_layers(
            self.layers,
            DECODER_IN_AXES,
            DECODER_OUT_AXES,
            y,
            deterministic,
            self_bias,
            query_positions,
            cross_kv,
            cross_bias,
            cache,
        )
        return self._finish(y), outputs


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

    def _embed(self, embedding: nn.Embed, ids: Array) -> Array:
        x = embedding(ids)
        scale = self.config.d_model**0.5 if self.config.scale_embeddings else 1.0
        return x * jnp.asarray(scale, x.dtype)

    def _logits(self, y: Array) -> Array:
        cfg = self.config
        project = self.target_embedding.attend if cfg.tie_output else self.output_projection
        logits = project(y).astype(jnp.float32)
        if cfg.final_logits_bias:
            logits = logits + self.logits_bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

    def encode(self, inputs: Array, *, train: bool) -> dict[str, Array]:
        """Args: inputs ``[batch, src_len]`` int32, PAD_ID padding.

        Returns: ``{"outputs": [batch, src_len, embed], "mask": [batch, src_len] bool}``.
        """
        check_length(self.config, inputs.shape[1], "The source")
        mask = inputs != PAD_ID
        x = self._embed(self.source_embedding, inputs)
        return {"outputs": self.encoder(x, mask, not train), "mask": mask}

    def decode(
        self,
        encoded: dict[str, Array],
        decoder_inputs: Array,
        *,
        train: bool,
        return_attention: bool = False,
    ) -> Array | tuple[Array, Array]:
        """Args:
          encoded: from ``encode``.
          decoder_inputs: ``[batch, tgt_len]`` int32, BOS first.
          train: enables dropout (needs a "dropout" rng).
          return_attention: also return the last layer's cross-attention, head-averaged.

        Returns:
          logits ``[batch, tgt_len, tgt_vocab]`` float32, and with ``return_attention`` the
          weights ``[batch, tgt_len, src_len]``.
        """
        check_length(self.config, decoder_inputs.shape[1], "The target")
        keys, values = self.decoder.memory_kv(encoded["outputs"])
        y = self._embed(self.target_embedding, decoder_inputs)
        y, attention = self.decoder(y, keys, values, encoded["mask"], not train)
        logits = self._logits(y)
        return (logits, attention) if return_attention else logits

    def init_decode(
        self, encoded: dict[str, Array], max_length: int
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Per-source state for step-by-step decoding.

        Args:
          encoded: from ``encode``.
          max_length: static, the most decoder steps that will be taken.

        Returns:
          memory ``{"outputs", "mask", "keys", "values"}`` with keys/values
          ``[batch, layers, src_len, heads, head_dim]``; cache ``{"keys", "values"}``
          ``[batch, 1, layers, max_length, heads, head_dim]`` (zeros) and ``"index"``
          ``[batch, 1]`` int32 (the next position, 0).
        """
        cfg = self.config
        check_length(cfg, max_length, "Decoding (max_length)")
        keys, values = self.decoder.memory_kv(encoded["outputs"])
        memory = {**encoded, "keys": keys, "values": values}
        batch = encoded["mask"].shape[0]
        buffer = (batch, 1, cfg.decoder_layers, max_length, cfg.num_heads, cfg.head_size)
        cache = {
            "keys": jnp.zeros(buffer, keys.dtype),
            "values": jnp.zeros(buffer, values.dtype),
            "index": jnp.zeros((batch, 1), jnp.int32),
        }
        return memory, cache

    def decode_step(
        self, memory: dict[str, Array], ids: Array, cache: dict[str, Array]
    ) -> tuple[Array, dict[str, Array]]:
        """One deterministic decoder step for every hypothesis.

        Args:
          memory: from ``init_decode`` (leaves ``[batch, ...]``).
          ids: ``[batch, beam]`` int32, the previous tokens.
          cache: leaves ``[batch, beam, ...]`` (``init_decode``'s, tiled/gathered along axis 1).

        Returns:
          logits ``[batch, beam, tgt_vocab]`` float32 and the advanced cache.
        """
        y = self._embed(self.target_embedding, ids)
        buffers = {"keys": cache["keys"], "values": cache["values"]}
        y, buffers = self.decoder.step(
            y, memory["keys"], memory["values"], memory["mask"], buffers, cache["index"]
        )
        return self._logits(y), {**buffers, "index": cache["index"] + 1}

    def __call__(self, inputs: Array, decoder_inputs: Array, *, train: bool) -> Array:
        """Encode then decode: logits ``[batch, tgt_len, tgt_vocab]`` float32."""
        return self.decode(self.encode(inputs, train=train), decoder_inputs, train=train)
