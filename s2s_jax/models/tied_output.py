"""Logits against a tied embedding, with a backward pass that never transposes the logits' grad.

``logits = y @ E.T`` for activations ``y [..., d]`` and the embedding ``E [vocab, d]``. Plain
autodiff computes the embedding's grad as ``dE = dlogits.T @ y``: the large ``dlogits
[tokens, vocab]`` is the left operand, contracted over its major (token) axis, a form XLA:CPU's
matmul kernels do not take as it is, so XLA writes a second, transposed copy of ``dlogits``
(W2: a 65 MB ``[8000, 2048]`` copy, 23 ms per step). Here the same product is taken as
``(y.T @ dlogits).T``: the small ``y`` goes on the left and ``dlogits`` on the right, in its own
layout, and only the ``[d, vocab]`` result is transposed. Same values; measured on W2 (tied
8000 x 256 embedding, batch 64 x 32 tokens) in one process, alternating: 884 -> 840 and
877 -> 853 ms per train step, and 62 MiB less XLA memory per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def tied_logits(y: jax.Array, embedding: jax.Array) -> jax.Array:
    """``y [..., d] @ embedding [vocab, d].T -> [..., vocab]``, in the inputs' common dtype."""
    return jnp.einsum("...d,vd->...v", y, embedding)


def _forward(y, embedding):
    return tied_logits(y, embedding), (y, embedding)


def _backward(residuals, grad):
    y, embedding = residuals
    d_y = jnp.einsum("...v,vd->...d", grad, embedding)
    tokens_y = y.reshape(-1, y.shape[-1])
    tokens_grad = grad.reshape(-1, grad.shape[-1])
    d_embedding = (tokens_y.T @ tokens_grad).T  # [d, vocab] product, then a small transpose
    return _like_primal(d_y, y), _like_primal(d_embedding, embedding)


def _like_primal(cotangent: jax.Array, primal: jax.Array) -> jax.Array:
    """Sums ``cotangent`` over the mesh axes it varies along and ``primal`` does not.

    Inside ``shard_map``, an operand that is the same on every device (an embedding replicated
    over the batch axes) meets one that differs per device; autodiff would sum the operand's
    gradient over those axes, and a custom rule must do the same to return its type.
    """
    extra = jax.typeof(cotangent).mat.varying - jax.typeof(primal).mat.varying
    return jax.lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


tied_logits.defvjp(_forward, _backward)
