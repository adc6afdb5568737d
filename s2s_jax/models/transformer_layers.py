"""Transformer building blocks: attention with a KV cache, MLP/GLU, norms, encoder/decoder layers.

Conventions shared by every block here:
  * Attention ``bias`` is an additive float32 array broadcastable to
    ``[batch, heads, queries, keys]``: masks (``NEG_INF``) and relative position biases are
    summed into it once per stack by the caller, so layers never build masks themselves
    (``mask_bias`` turns boolean masks into it; ``segment_mask`` is the packed-batch mask).
  * Step mode (a ``cache`` is given): the ``length`` axis of the input holds independent
    hypotheses (beams) of one decoding step, each at its own position ``positions[b, i]`` with
    its own key/value history in a ``StepCache``. Cross-attention needs no special case: the
    hypotheses are simply the queries, so encoder keys are shared by all beams without copies.
  * Stacks: ``layer_stack`` builds a layer under ``nn.scan`` (params on a leading "layers"
    axis) or unrolled (``layers_<i>``), ``apply_layers`` runs either, and
    ``stack_layer_params`` / ``unstack_layer_params`` convert params between the layouts.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models.attention_kernel import AttentionMask, choose, fused_attention
from s2s_jax.models.positions import apply_rope
from s2s_jax.models.step_cache import StepCache, attend_step, scaled_softmax
from s2s_jax.models.transformer_config import TransformerConfig
from s2s_jax.models.types import DTYPES

Array = jax.Array

# Large but finite: exp() underflows to exactly 0 in float32, and a fully masked row (an all-PAD
# source) gets uniform weights instead of the NaN that -inf would give.
NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class Activation:
    """An MLP nonlinearity; gated ones multiply it with a second input projection (GLU)."""

    fn: Callable[[Array], Array]
    gated: bool


_exact_gelu = functools.partial(nn.gelu, approximate=False)

ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(nn.relu, gated=False),
    "gelu": Activation(_exact_gelu, gated=False),
    "swish": Activation(nn.swish, gated=False),
    "geglu": Activation(_exact_gelu, gated=True),
    "swiglu": Activation(nn.swish, gated=True),
    "reglu": Activation(nn.relu, gated=True),
}


def _partitioned(
    init: Callable[..., Array], names: Sequence[str | None], **kwargs: Any
) -> Callable[..., Any]:
    return nn.with_logical_partitioning(init, tuple(names), **kwargs)


def _layer_norm(config: TransformerConfig, name: str | None) -> nn.Module:
    return nn.LayerNorm(
        epsilon=config.norm_epsilon,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
        scale_init=_partitioned(nn.initializers.ones, ("embed",)),
        bias_init=_partitioned(nn.initializers.zeros, ("embed",)),
        name=name,
    )


def _rms_norm(config: TransformerConfig, name: str | None) -> nn.Module:
    return nn.RMSNorm(
        epsilon=config.norm_epsilon,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
        scale_init=_partitioned(nn.initializers.ones, ("embed",)),
        name=name,
    )


NORMS: dict[str, Callable[[TransformerConfig, str | None], nn.Module]] = {
    "layernorm": _layer_norm,
    "rmsnorm": _rms_norm,
}


def make_norm(config: TransformerConfig, name: str | None = None) -> nn.Module:
    """The normalisation layer named by ``config.norm`` (statistics in float32)."""
    return NORMS[config.norm](config, name)


def projection(
    config: TransformerConfig,
    features: int | tuple[int, ...],
    *,
    kernel_axes: Sequence[str | None],
    bias_axes: Sequence[str | None],
    axis: int | tuple[int, ...] = -1,
    name: str | None = None,
) -> nn.DenseGeneral:
    """A biased ``DenseGeneral`` whose kernel and bias carry logical axis names."""
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
        # DenseGeneral creates a flattened kernel, then reshapes it: a sharding constraint with
        # the full logical names at creation would have the wrong rank, so none is applied
        # there (rules=()); the names still decide the state shardings.
        kernel_init=_partitioned(nn.initializers.lecun_normal(), kernel_axes, rules=()),
        bias_init=_partitioned(nn.initializers.zeros, bias_axes, rules=()),
        name=name,
    )


def split_heads(config: TransformerConfig, name: str | None = None) -> nn.DenseGeneral:
    """``[..., embed] -> [..., heads, head_dim]`` projection (queries, keys or values)."""
    return projection(
        config,
        (config.num_heads, config.head_size),
        kernel_axes=("embed", "heads", "kv"),
        bias_axes=("heads", "kv"),
        name=name,
    )


class HeadsParams(nn.Module):
    """The kernel ``[embed, heads, head_dim]`` and bias ``[heads, head_dim]`` of one
    ``split_heads`` projection, declared exactly as ``split_heads`` declares them (same names,
    shapes, initial values and logical axes) but returned instead of applied, so several
    projections of one input can run as one matmul (``fused_split_heads``)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self) -> tuple[Array, Array]:
        cfg = self.config
        shape = (cfg.d_model, cfg.num_heads, cfg.head_size)

        def kernel_init(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
            # As DenseGeneral: initialised flat ([embed, heads * head_dim]), then reshaped.
            flat = nn.initializers.lecun_normal()(key, (shape[0], shape[1] * shape[2]), dtype)
            return flat.reshape(shape)

        dtype = DTYPES[cfg.param_dtype]
        kernel = self.param(
            "kernel", _partitioned(kernel_init, ("embed", "heads", "kv"), rules=()), shape, dtype
        )
        bias = self.param(
            "bias", _partitioned(nn.initializers.zeros, ("heads", "kv"), rules=()), shape[1:], dtype
        )
        return kernel, bias


def fused_split_heads(config: TransformerConfig, x: Array, names: Sequence[str]) -> list[Array]:
    """``split_heads(config, name)(x)`` for every name, as one matmul over the stacked kernels.

    Args:
      config: the Transformer config.
      x: ``[..., embed]``.
      names: the projections' param names (e.g. query, key, value), each a ``HeadsParams``.

    Returns:
      One ``[..., heads, head_dim]`` per name: the values ``split_heads`` gives, with the
      params stored as it stores them.
    """
    kernels, biases = zip(*(HeadsParams(config, name=name)() for name in names), strict=True)
    x, kernel, bias = nn.dtypes.promote_dtype(
        x, jnp.stack(kernels, axis=1), jnp.stack(biases), dtype=DTYPES[config.dtype]
    )
    out = jnp.einsum("...e,ephd->...phd", x, kernel) + bias
    return [out[..., i, :, :] for i in range(len(names))]


def merge_heads(config: TransformerConfig, name: str | None = None) -> nn.DenseGeneral:
    """``[..., heads, head_dim] -> [..., embed]`` output projection."""
    return projection(
        config,
        config.d_model,
        axis=(-2, -1),
        kernel_axes=("heads", "kv", "embed"),
        bias_axes=("embed",),
        name=name,
    )


def segment_mask(query_segmentation: Array, key_segmentation: Array) -> Array:
    """Which keys each query may see in a packed batch: those of its own non-zero segment.

    Args:
      query_segmentation: ``[batch, q_len]`` int, segment ids 1, 2, ... and 0 on padding.
      key_segmentation: ``[batch, k_len]`` int, same convention.

    Returns:
      ``[batch, q_len, k_len]`` bool. A padding query (segment 0) sees no key; its output is
      discarded, and ``NEG_INF`` keeps its fully masked row finite.
    """
    same = query_segmentation[:, :, None] == key_segmentation[:, None, :]
    return same & (key_segmentation[:, None, :] != 0)


def mask_bias(allowed: Array) -> Array:
    """Boolean attention mask to the additive bias layers take.

    Args:
      allowed: ``[batch or 1, q_len or 1, k_len]`` bool, True where a query may attend.

    Returns:
      ``[batch or 1, 1, q_len or 1, k_len]`` float32: 0 where allowed, ``NEG_INF`` elsewhere.
    """
    return jnp.where(allowed, 0.0, NEG_INF)[:, None]


def attention_weights(query: Array, key: Array, bias: Array) -> Array:
    """Scaled dot-product attention weights.

    Args:
      query: ``[batch, q_len, heads, head_dim]``.
      key: ``[batch, k_len, heads, head_dim]``.
      bias: additive, broadcastable to ``[batch, heads, q_len, k_len]``.

    Returns:
      ``[batch, heads, q_len, k_len]`` float32 softmax weights (logits accumulate in float32,
      whatever the compute dtype).
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    return scaled_softmax(logits, query.shape[-1], bias)


def _attend(
    config: TransformerConfig,
    query: Array,
    key: Array,
    value: Array,
    mask: AttentionMask | Array,
    det: bool,
) -> tuple[Array, Array | None]:
    """Whole-sequence attention through the configured kernel (``models/attention_kernel``).

    A bare array ``mask`` is an additive bias (``AttentionMask(bias)``), as for direct use.

    Returns:
      Output ``[batch, q_len, heads, head_dim]`` and weights ``[b, heads, q, k]`` (None when a
      fused kernel ran: they are only computed when ``mask.need_weights``).
    """
    if not isinstance(mask, AttentionMask):
        mask = AttentionMask(mask)
    dropout = config.attention_dropout > 0 and not det
    kernel = choose(
        config.attention_kernel,
        config.dtype,
        query.shape[-1],
        dropout=dropout,
        need_weights=mask.need_weights,
        keys=key.shape[1],
    )
    if kernel != "einsum":
        return fused_attention(kernel, query, key, value, mask), None
    weights = attention_weights(query, key, mask.bias)
    dropped = nn.Dropout(config.attention_dropout)(weights, deterministic=det)
    return jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(value.dtype), value), weights


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional rotary positions and a per-hypothesis KV cache."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        positions: Array,
        bias: AttentionMask | Array,
        cache: StepCache | None,
        deterministic: bool,
    ) -> tuple[Array, StepCache | None]:
        """Self-attention over a whole sequence, or one decoding step when ``cache`` is given.

        Args:
          x: ``[batch, length, embed]`` (in step mode ``length`` is the beam).
          positions: ``[batch or 1, length]`` int; rotary angles and, in step mode, cache slots.
          bias: the sequence's ``AttentionMask``, or in step mode the additive bias,
            broadcastable to ``[batch, heads, length, max_length cache slots]``.
          cache: None, or this layer's ``StepCache`` (beam = ``length``, ``max_length`` slots).
          deterministic: disables attention dropout.

        Returns:
          ``([batch, length, embed], cache)``; the cache is None when none was given.
        """
        cfg = self.config
        heads_axes = ("batch", "length", "heads", "kv")
        q, k, v = (
            nn.with_logical_constraint(y, heads_axes)
            for y in fused_split_heads(cfg, x, ("query", "key", "value"))
        )
        if cfg.position == "rope":
            q, k = apply_rope(q, positions), apply_rope(k, positions)
        if cache is None:
            out, _ = _attend(cfg, q, k, v, bias, deterministic)
        else:
            cache = cache.write(k, v, positions)
            out = cache.attend(q, bias)
        return merge_heads(cfg, "out")(out), cache


class CrossAttention(nn.Module):
    """Multi-head attention from decoder states to precomputed encoder keys and values."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        keys: Array,
        values: Array,
        bias: AttentionMask | Array,
        deterministic: bool,
        step: bool = False,
    ) -> tuple[Array, Array | None]:
        """Args:
          x: ``[batch, q_len, embed]`` decoder states (or beams of one step).
          keys: ``[batch, src_len, heads, head_dim]``; with ``step``, ``[batch, heads,
            head_dim, src_len]`` (``memory_step_layout``). Values likewise.
          bias: the ``AttentionMask`` of the source (padding and, when packed, segments);
            in step mode its additive bias, broadcastable to ``[batch, heads, q_len, src_len]``.
          deterministic: disables attention dropout.
          step: step mode (``q_len`` holds the beams of one decoding step; no dropout).

        Returns:
          ``([batch, q_len, embed], weights [batch, q_len, src_len] averaged over heads)``;
          whole sequences give weights only when ``bias.need_weights`` (else None).
        """
        query = split_heads(self.config, "query")(x)
        if step:
            out, weights = attend_step(query, keys, values, bias)
            weights = weights.mean(axis=2)
        else:
            out, weights = _attend(self.config, query, keys, values, bias, deterministic)
            weights = None if weights is None else weights.mean(axis=1)
        return merge_heads(self.config, "out")(out), weights


class Mlp(nn.Module):
    """Position-wise feed-forward block; gated activations use two input projections."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        """Args: x ``[batch, length, embed]``. Returns ``[batch, length, embed]``."""
        cfg = self.config
        activation = ACTIVATIONS[cfg.activation]
        dense_in = functools.partial(
            projection, cfg, cfg.mlp_dim, kernel_axes=("embed", "mlp"), bias_axes=("mlp",)
        )
        if activation.gated:
            hidden = activation.fn(dense_in(name="wi_0")(x)) * dense_in(name="wi_1")(x)
        else:
            hidden = activation.fn(dense_in(name="wi")(x))
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
        hidden = nn.Dropout(cfg.activation_dropout)(hidden, deterministic=deterministic)
        dense_out = projection(
            cfg, cfg.d_model, kernel_axes=("mlp", "embed"), bias_axes=("embed",), name="wo"
        )
        return dense_out(hidden)


def _residual(
    config: TransformerConfig,
    deterministic: bool,
    x: Array,
    sublayer: Callable[[Array], tuple[Array, Any]],
    norm_name: str,
) -> tuple[Array, Any]:
    """Pre-LN ``x + drop(f(norm(x)))`` or post-LN ``norm(x + drop(f(x)))``; same params."""
    norm = make_norm(config, norm_name)
    y, aux = sublayer(norm(x) if config.pre_norm else x)
    x = x + nn.Dropout(config.dropout)(y, deterministic=deterministic)
    x = x if config.pre_norm else norm(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), aux


class EncoderLayer(nn.Module):
    """Self-attention and MLP sublayers. Scan signature: ``(x, *args) -> (x, None)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x: Array, deterministic: bool, bias: AttentionMask, positions: Array
    ) -> tuple[Array, None]:
        """Args:
          x: ``[batch, src_len, embed]``.
          deterministic: disables dropout.
          bias: the mask; its bias ``[batch or 1, heads or 1, src_len or 1, src_len]`` holds
            padding (and, when packed,
            segment) mask + relative bias.
          positions: ``[batch or 1, src_len]`` int (rotary angles).

        Returns:
          ``([batch, src_len, embed], None)``.
        """
        cfg = self.config
        self_attention = SelfAttention(cfg, name="self_attention")
        mlp = Mlp(cfg, name="mlp")
        residual = functools.partial(_residual, cfg, deterministic)
        x, _ = residual(
            x,
            lambda h: self_attention(h, positions, bias, None, deterministic),
            "self_attention_norm",
        )
        x, _ = residual(x, lambda h: (mlp(h, deterministic), None), "mlp_norm")
        return x, None


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention and MLP sublayers.

    Scan signature: ``(x, *args) -> (x, (cache, cross_attention_weights))``.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        deterministic: bool,
        self_bias: AttentionMask | Array,
        positions: Array,
        cross_kv: tuple[Array, Array],
        cross_bias: AttentionMask | Array,
        cache: StepCache | None,
    ) -> tuple[Array, tuple[StepCache | None, Array]]:
        """Args:
          x: ``[batch, length, embed]`` (in step mode ``length`` is the beam).
          deterministic: disables dropout.
          self_bias: an ``AttentionMask`` whose bias, broadcastable to ``[batch, heads, length,
            keys]``, holds the causal (and, when packed, segment) mask + relative bias; in step
            mode that additive bias alone.
          positions: ``[batch or 1, length]`` int, see ``SelfAttention``.
          cross_kv: this layer's encoder keys and values, ``[batch, src_len, heads, head_dim]``
            (in step mode ``[batch, heads, head_dim, src_len]``, see ``memory_step_layout``).
          cross_bias: likewise, bias ``[batch, 1, 1 or length, src_len]``: source padding
            (and, when packed, segment) mask.
          cache: None or this layer's buffers, see ``SelfAttention``.

        Returns:
          ``([batch, length, embed], (cache, weights [batch, length, src_len] or None))``:
          whole sequences return weights only when ``cross_bias.need_weights``.
        """
        cfg = self.config
        self_attention = SelfAttention(cfg, name="self_attention")
        cross_attention = CrossAttention(cfg, name="cross_attention")
        mlp = Mlp(cfg, name="mlp")
        residual = functools.partial(_residual, cfg, deterministic)
        x, cache = residual(
            x,
            lambda h: self_attention(h, positions, self_bias, cache, deterministic),
            "self_attention_norm",
        )
        x, weights = residual(
            x,
            lambda h: cross_attention(h, *cross_kv, cross_bias, deterministic, cache is not None),
            "cross_attention_norm",
        )
        x, _ = residual(x, lambda h: (mlp(h, deterministic), None), "mlp_norm")
        return x, (cache, weights)


# "none" means no rematerialisation at all; "full" saves nothing and recomputes the layer.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# Scan axes of the layer arguments after the carried x, in the order of the signatures above.
ENCODER_IN_AXES = (nn.broadcast, nn.broadcast, nn.broadcast)  # deterministic, bias, positions
# deterministic, self_bias, positions, cross_kv [b, layers, ...], cross_bias, cache. Stacks run
# whole sequences only (cache None); decoding steps call the layers one by one with per-layer
# caches (``Decoder.step``).
DECODER_IN_AXES = (nn.broadcast, nn.broadcast, nn.broadcast, 1, nn.broadcast, nn.broadcast)
DECODER_OUT_AXES = (0, 0)  # cache (None), weights [layers, b, length, src]


def layer_stack(
    config: TransformerConfig, layer: type[nn.Module], num: int, in_axes: tuple, out_axes: Any
) -> nn.Module | list[nn.Module]:
    """Builds a stack of ``num`` layers; call inside ``setup``.

    Args:
      config: model config (``scan_layers``, ``remat_policy``).
      layer: ``EncoderLayer`` or ``DecoderLayer``.
      num: number of layers.
      in_axes: scan axes of the layer arguments after x (``ENCODER_IN_AXES``...).
      out_axes: scan axes of the layer outputs after x.

    Returns:
      One scanned module (params stacked on a leading "layers" axis), or a list of ``num``
      separate layers when ``config.scan_layers`` is False. Run either with ``apply_layers``.
    """
    if config.remat_policy != "none":
        layer = nn.remat(
            layer,
            policy=REMAT_POLICIES[config.remat_policy],
            prevent_cse=not config.scan_layers,  # scan already keeps XLA from merging recomputes
            static_argnums=(2,),  # deterministic (self is 0, x is 1)
        )
    if not config.scan_layers:
        return [layer(config) for _ in range(num)]
    scanned = nn.scan(
        layer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=in_axes,
        out_axes=out_axes,
        length=num,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return scanned(config)


def apply_layers(
    layers: nn.Module | Sequence[nn.Module], in_axes: tuple, out_axes: Any, x: Array, *args: Any
) -> tuple[Array, Any]:
    """Runs a ``layer_stack``: the scan, or its unrolled twin slicing and stacking alike.

    Args:
      layers: from ``layer_stack``.
      in_axes, out_axes: the axes given to ``layer_stack``.
      x: the carried activations ``[batch, length, embed]``.
      *args: the layer arguments after x; scanned ones hold every layer along their axis.

    Returns:
      The last layer's x and the per-layer outputs stacked along ``out_axes``.
    """
    if not isinstance(layers, Sequence):  # setup() turns the unrolled list into a tuple
        return layers(x, *args)
    outputs = []
    for i, layer in enumerate(layers):
        layer_args = [
            arg
            if axis is nn.broadcast
            else jax.tree.map(lambda a, ax=axis, i=i: a.take(i, ax), arg)
            for arg, axis in zip(args, in_axes, strict=True)
        ]
        x, y = layer(x, *layer_args)
        outputs.append(y)
    stack = lambda axis, *ys: jax.tree.map(lambda *leaves: jnp.stack(leaves, axis), *ys)
    return x, jax.tree.map(stack, out_axes, *outputs)


_UNROLLED_KEY = re.compile(r"layers_(\d+)")


def stack_layer_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Unrolled -> scanned layout: ``layers_0..layers_{n-1}`` become one ``layers`` subtree.

    Args:
      params: an unboxed parameter tree (any nesting, e.g. with or without ``{"params": ...}``).

    Returns:
      The same tree with each group of per-layer subtrees stacked along a new leading axis.
    """
    out: dict[str, Any] = {}
    numbered = {int(m.group(1)): k for k in params if (m := _UNROLLED_KEY.fullmatch(k))}
    if numbered:
        if sorted(numbered) != list(range(len(numbered))):
            raise ValueError(f"Layer keys must be layers_0..layers_N, got {sorted(numbered)}.")
        per_layer = [params[numbered[i]] for i in range(len(numbered))]
        out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    for key, value in params.items():
        if key not in numbered.values():
            out[key] = stack_layer_params(value) if isinstance(value, Mapping) else value
    return out


def unstack_layer_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned -> unrolled layout: each ``layers`` subtree splits into ``layers_<i>``.

    Args:
      params: an unboxed parameter tree whose ``layers`` leaves have a leading layer axis.

    Returns:
      The same tree with per-layer subtrees ``layers_0..layers_{n-1}``.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "layers":
            num = jax.tree.leaves(value)[0].shape[0]
            for i in range(num):
                out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], value)
        elif isinstance(value, Mapping):
            out[key] = unstack_layer_params(value)
        else:
            out[key] = value
    return out
