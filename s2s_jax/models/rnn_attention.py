"""Attention mechanisms for recurrent decoders.

Every mechanism has two methods:

    prepare(values, mask) -> memory
        Runs once per source batch: everything that depends only on the encoder (projected keys
        and values) so a decoder step does not recompute it. values: [batch, src_len, value_dim];
        mask: [batch, src_len] bool. Memory leaves are [batch, ...].
    __call__(query, memory) -> (context, weights)
        query: [batch, beam, query_dim]; context: [batch, beam, context_dim];
        weights: [batch, beam, src_len] float32 (averaged over heads).

Queries carry a beam axis that memory lacks: the einsums broadcast over it, so encoder outputs
are never copied per beam. Mechanisms own parameters used by both methods, hence ``setup``.

Parameter axis names: encoder-output features "embed", decoder hidden "hidden", the attention
space "kv" (per head for multi-head, with "heads").
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models.rnn import logical_dense

Array = jax.Array
Dtype = Any
Memory = dict[str, Array]

# Large but finite: exp() of it underflows to exactly 0 in float32, and a fully padded row
# stays finite (no NaN) instead of computing softmax over all -inf.
NEG_INF = -1e9


def masked_softmax(scores: Array, mask: Array) -> Array:
    """Softmax over the last axis (source positions) with PAD positions given zero weight.

    Args:
      scores: ``[batch, ..., src_len]``.
      mask: ``[batch, src_len]`` bool, True at real source tokens.

    Returns:
      float32 weights shaped like ``scores``: non-negative, summing to 1 over real positions,
      exactly 0 at PAD (a row with no real position is all zeros).
    """
    mask = mask.reshape(mask.shape[:1] + (1,) * (scores.ndim - 2) + mask.shape[-1:])
    scores = jnp.where(mask, scores.astype(jnp.float32), NEG_INF)
    return jax.nn.softmax(scores, axis=-1) * mask


def _attend(scores: Array, values: Array, mask: Array, dtype: Dtype) -> tuple[Array, Array]:
    """Single-head masked attention: scores ``[b, k, s]``, values ``[b, s, d]``."""
    weights = masked_softmax(scores, mask)
    context = jnp.einsum("bks,bsd->bkd", weights.astype(dtype), values.astype(dtype))
    return context, weights


class DotAttention(nn.Module):
    """Luong dot attention: ``score(h, k) = h . k`` (query and value sizes must match).

    Attributes:
      hidden_size: query (decoder hidden) size; unused by the score, kept for a uniform API.
      dtype: compute dtype.
      param_dtype: storage dtype of parameters (there are none).
    """

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def prepare(self, values: Array, mask: Array) -> Memory:
        """The values double as keys. See the module docstring for shapes."""
        return {"values": values.astype(self.dtype), "mask": mask}

    def __call__(self, query: Array, memory: Memory) -> tuple[Array, Array]:
        """Attends. See the module docstring for shapes."""
        keys = memory["values"]
        if query.shape[-1] != keys.shape[-1]:
            raise ValueError(
                f"Dot attention needs query size == key size, got {query.shape[-1]} and "
                f"{keys.shape[-1]}; use 'luong_general' when they differ."
            )
        scores = jnp.einsum("bkd,bsd->bks", query.astype(self.dtype), keys)
        return _attend(scores, memory["values"], memory["mask"], self.dtype)


class GeneralAttention(nn.Module):
    """Luong general attention: ``score(h, k) = h^T W k``; ``W k`` is precomputed.

    Attributes:
      hidden_size: query (decoder hidden) size.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.key_proj = logical_dense(
            self.hidden_size,
            ("embed", "hidden"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_bias=False,
        )

    def prepare(self, values: Array, mask: Array) -> Memory:
        """Projects the values into query space once. See the module docstring for shapes."""
        return {"keys": self.key_proj(values), "values": values.astype(self.dtype), "mask": mask}

    def __call__(self, query: Array, memory: Memory) -> tuple[Array, Array]:
        """Attends. See the module docstring for shapes."""
        scores = jnp.einsum("bkd,bsd->bks", query.astype(self.dtype), memory["keys"])
        return _attend(scores, memory["values"], memory["mask"], self.dtype)


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau, and Luong "concat") attention: ``v^T tanh(W q + U k)``.

    ``U k`` (with the bias) is precomputed.

    Attributes:
      hidden_size: query size and size of the additive hidden layer.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.query_proj = logical_dense(self.hidden_size, ("hidden", "kv"), use_bias=False, **kw)
        self.key_proj = logical_dense(self.hidden_size, ("embed", "kv"), **kw)
        v_init = nn.initializers.normal(stddev=self.hidden_size**-0.5)
        self.score_vector = self.param(
            "score_vector",
            nn.with_logical_partitioning(v_init, ("kv",)),
            (self.hidden_size,),
            self.param_dtype,
        )

    def prepare(self, values: Array, mask: Array) -> Memory:
        """Projects the keys once. See the module docstring for shapes."""
        return {"keys": self.key_proj(values), "values": values.astype(self.dtype), "mask": mask}

    def __call__(self, query: Array, memory: Memory) -> tuple[Array, Array]:
        """Attends. See the module docstring for shapes."""
        q = self.query_proj(query)  # [b, k, a]
        hidden = jnp.tanh(q[:, :, None, :] + memory["keys"][:, None, :, :])  # [b, k, s, a]
        scores = hidden @ self.score_vector.astype(self.dtype)
        return _attend(scores, memory["values"], memory["mask"], self.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with the decoder hidden state as query.

    Keys and values are projected per head once; the context is projected back to
    ``hidden_size``. Returned weights are the mean over heads.

    Attributes:
      hidden_size: query size, output size, and ``num_heads * head_dim``.
      num_heads: number of heads (must divide ``hidden_size``).
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    num_heads: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "choose num_heads that divides it."
            )
        head_dim = self.hidden_size // self.num_heads
        self.query_proj = self._projection(
            (self.num_heads, head_dim), -1, ("hidden", "heads", "kv")
        )
        self.key_proj = self._projection((self.num_heads, head_dim), -1, ("embed", "heads", "kv"))
        self.value_proj = self._projection((self.num_heads, head_dim), -1, ("embed", "heads", "kv"))
        self.out_proj = self._projection(self.hidden_size, (-2, -1), ("heads", "kv", "hidden"))

    def _projection(
        self, features: int | tuple[int, ...], axis: int | tuple[int, ...], names: tuple[str, ...]
    ) -> nn.DenseGeneral:
        # DenseGeneral initialises a flattened [in, out] kernel, so fan-in spans all input axes.
        # rules=(): no sharding constraint on the flattened kernel at creation (wrong rank under
        # a mesh); the logical names still decide the state shardings.
        init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), names, rules=())
        return nn.DenseGeneral(
            features,
            axis=axis,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=init,
        )

    def prepare(self, values: Array, mask: Array) -> Memory:
        """Projects keys and values per head once. See the module docstring for shapes."""
        return {"keys": self.key_proj(values), "values": self.value_proj(values), "mask": mask}

    def __call__(self, query: Array, memory: Memory) -> tuple[Array, Array]:
        """Attends. See the module docstring for shapes."""
        q = self.query_proj(query)  # [b, k, h, d]
        q = q * jnp.asarray(q.shape[-1] ** -0.5, self.dtype)
        scores = jnp.einsum("bkhd,bshd->bkhs", q, memory["keys"])
        weights = masked_softmax(scores, memory["mask"])
        context = jnp.einsum("bkhs,bshd->bkhd", weights.astype(self.dtype), memory["values"])
        return self.out_proj(context), weights.mean(axis=2)


ATTENTIONS: dict[str, type[nn.Module]] = {
    "bahdanau": AdditiveAttention,
    "luong_dot": DotAttention,
    "luong_general": GeneralAttention,
    "luong_concat": AdditiveAttention,
    "multihead": MultiHeadAttention,
}
