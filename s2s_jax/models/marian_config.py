"""The Hugging Face ``MarianConfig`` of a randomly initialised Marian that bridges 1:1 into
s2s_jax (``s2s_jax.models.marian``), and the activation names both sides share.

Free of JAX, so a process that only runs the Hugging Face side (e.g. a benchmark peer measured
in a process of its own) does not load it.
"""

from __future__ import annotations

from typing import Any

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID

# Hugging Face activation_function -> s2s_jax activation. HF "gelu" is the exact (erf) GELU and
# "swish" / "silu" are x * sigmoid(x), as s2s_jax's "gelu" and "swish" are.
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}


def marian_test_config(
    vocab_size: int = 8000,
    d_model: int = 256,
    layers: int = 3,
    heads: int = 4,
    ffn: int = 1024,
    max_len: int = 128,
    dropout: float = 0.1,
    activation: str = "relu",
) -> Any:
    """A ``transformers.MarianConfig`` for randomly initialised models that bridge 1:1.

    Opus-MT style (shared, tied, sqrt(d_model)-scaled embeddings; EOS forced at the length
    limit as s2s_jax's decoders do) but with s2s_jax's ids: pad 0, decoder start 1, eos 2.

    Args:
      vocab_size: shared source/target vocabulary size.
      d_model, layers, heads, ffn: width, depth of each stack, attention heads, MLP size.
      max_len: ``max_position_embeddings``.
      dropout: residual dropout (attention and activation dropout are 0, as in Opus-MT).
      activation: a key of ``ACTIVATIONS``.

    Returns:
      The ``MarianConfig``; ``transformers.MarianMTModel(config)`` builds the model.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} has no s2s_jax equivalent; supported: "
            f"{', '.join(ACTIVATIONS)}."
        )
    from transformers import MarianConfig  # optional dependency: imported only when used

    return MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=max_len,
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation_function=activation,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        decoder_start_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        forced_eos_token_id=EOS_ID,
    )
