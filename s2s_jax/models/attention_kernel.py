"""Which kernel computes whole-sequence attention, and the fused kernels' call.

``TransformerConfig.attention_kernel`` names one of ``ATTENTION_KERNELS`` (``transformer_config``):

  * "einsum": the explicit maths (``transformer_layers._attend``): logits in float32, softmax,
    dropout on the weights, a second einsum. The only kernel that can return the weights or
    drop attention weights out, so it also runs whenever either is asked for.
  * "xla": ``jax.nn.dot_product_attention`` with XLA's implementation (any backend).
  * "cudnn": the same call with cuDNN's fused flash attention (NVIDIA GPU, bfloat16/float16,
    head size a multiple of 8 and at most 128).
  * "auto" (default): "cudnn" where it applies and the keys are long enough for it to pay
    (``MIN_CUDNN_KEYS``), else "einsum", so CPU and TPU runs keep the maths (and the numbers)
    they had before.

The fused kernels get the mask in the form they are fastest with. A padding mask is per-row key
lengths and a causal mask a flag, never a ``[batch, 1, q, k]`` array, unless the mask is not
of that form (packed segments, T5 relative bias): then the additive bias goes in whole (cuDNN
also differentiates it, a cost the lengths avoid). Lengths assume trailing padding, which is
what every s2s_jax pipeline makes (``inputs_mask`` is a prefix of each row).

Decoding steps never come here: they attend over a ``StepCache`` (``step_cache.attend_step``).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array

FUSED_DTYPES = ("bfloat16", "float16")  # cuDNN's flash attention takes no float32
MAX_CUDNN_HEAD = 128  # cuDNN's limit before Hopper (256 from Hopper on)
# "auto" picks cuDNN from this many keys on. Measured on an H200 (``benchmarks/device.py``,
# W2 at Transformer-base, bf16, batch 128 x 64 tokens): at 64 keys cuDNN trained 6% slower than
# the einsum maths (353k vs 377k tokens/s): its [q, k] scores are too small for never writing
# them to memory to pay for the kernel's fixed costs. The saving grows with q * k; 256 is a
# conservative point where the scores per head reach 64k values, not yet measured.
MIN_CUDNN_KEYS = 256


@flax.struct.dataclass
class AttentionMask:
    """What a whole-sequence attention may see, in both forms the kernels take.

    Attributes:
      bias: additive float32, broadcastable to ``[batch, heads, queries, keys]``: the
        einsum kernel's form, always complete (masks and relative-position bias).
      key_lengths: ``[batch]`` int32 real keys per row (>= 1), or None for no padding mask.
      causal: queries see keys at their own position and before.
      exact: ``key_lengths`` and ``causal`` say everything ``bias`` does, so the fused kernels
        may ignore it (False with packed segments or a relative-position bias).
      need_weights: the caller wants the attention weights back (forces "einsum").
    """

    bias: Array
    key_lengths: Array | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)
    exact: bool = flax.struct.field(pytree_node=False, default=False)
    need_weights: bool = flax.struct.field(pytree_node=False, default=False)


def key_lengths(mask: Array) -> Array:
    """``[batch, keys]`` bool prefix mask -> ``[batch]`` int32 lengths, at least 1.

    An all-padding row (a filler row of the last batch) keeps one key, so no kernel sees a row
    with nothing to attend to; its outputs are discarded like any padding.
    """
    return jnp.maximum(mask.sum(axis=-1, dtype=jnp.int32), 1)


def choose(
    kernel: str,
    dtype: str,
    head_size: int,
    *,
    dropout: bool,
    need_weights: bool,
    keys: int = MIN_CUDNN_KEYS,
) -> str:
    """Resolves a configured kernel name to the one that runs this call.

    Args:
      kernel: ``TransformerConfig.attention_kernel``.
      dtype: the compute dtype's name.
      head_size: per-head query/key size.
      keys: the key length of this call ("auto" takes cuDNN from ``MIN_CUDNN_KEYS`` on).
      dropout: attention dropout is active in this call.
      need_weights: the weights are wanted back.

    Returns:
      "einsum", "xla" or "cudnn".

    Raises:
      ValueError: "cudnn" was asked for where it cannot run.
    """
    if dropout or need_weights or kernel == "einsum":
        return "einsum"
    if kernel == "xla":
        return kernel
    problem = _cudnn_problem(dtype, head_size)
    if kernel == "auto":
        return "einsum" if problem or keys < MIN_CUDNN_KEYS else "cudnn"
    if problem:
        raise ValueError(
            f"attention_kernel='cudnn' cannot run here: {problem}. Use attention_kernel='auto' "
            "(cuDNN where it applies, else the einsum maths) or 'xla'."
        )
    return "cudnn"


def _cudnn_problem(dtype: str, head_size: int) -> str | None:
    if jax.default_backend() != "gpu":
        return f"the backend is {jax.default_backend()!r}, not an NVIDIA GPU"
    if dtype not in FUSED_DTYPES:
        return f"the compute dtype is {dtype}; cuDNN's flash attention takes {FUSED_DTYPES}"
    if head_size % 8 or head_size > MAX_CUDNN_HEAD:
        return f"head size {head_size} is not a multiple of 8 up to {MAX_CUDNN_HEAD}"
    return None


def fused_attention(kernel: str, query: Array, key: Array, value: Array, mask: AttentionMask):
    """``jax.nn.dot_product_attention`` with ``kernel``'s implementation.

    Args:
      kernel: "xla" or "cudnn".
      query: ``[batch, q_len, heads, head_dim]``; key, value: ``[batch, k_len, heads, head_dim]``.
      mask: the call's ``AttentionMask``.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in the query's dtype.
    """
    if mask.exact:
        return jax.nn.dot_product_attention(
            query,
            key,
            value,
            key_value_seq_lengths=mask.key_lengths,
            is_causal=mask.causal,
            implementation=kernel,
        )
    bias = mask.bias
    if kernel == "cudnn":  # cuDNN wants the bias whole, in the compute dtype
        floor = jnp.finfo(query.dtype).min / 2
        shape = (*bias.shape[:2], query.shape[1], key.shape[1])
        bias = jnp.broadcast_to(jnp.maximum(bias, floor), shape).astype(query.dtype)
    # No stop_gradient: a T5 relative-position bias is learned through it.
    return jax.nn.dot_product_attention(query, key, value, bias=bias, implementation=kernel)
