"""Hyperparameters of the Transformer encoder and decoder (names only: no layer code here).

The layers (``transformer_layers.py``) look the choices up in their own registries; a test
checks that the names below and those registries agree.
"""

from __future__ import annotations

import dataclasses

from s2s_jax.models.config_checks import DTYPE_NAMES, check_choice, check_positive, check_rates

ACTIVATION_NAMES = ("relu", "gelu", "swish", "geglu", "swiglu", "reglu")
NORM_NAMES = ("layernorm", "rmsnorm")
POSITION_TABLE_NAMES = ("sinusoidal", "learned")  # absolute tables added to the embeddings
POSITION_NAMES = (*POSITION_TABLE_NAMES, "rope", "t5_relative")
REMAT_NAMES = ("none", "full", "dots", "dots_with_no_batch_dims")
INPUT_NAMES = ("tokens", "features")  # what an encoder's front end takes (``models/frontends``)
# Whole-sequence attention kernels (``models/attention_kernel``).
ATTENTION_KERNEL_NAMES = ("auto", "einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """One Transformer stack (encoder or decoder); invalid values raise ``ValueError``.

    Attributes:
      vocab_size: token ids of this side (PAD_ID 0 included); 0 for non-token encoder inputs.
      d_model, num_heads, mlp_dim: model width, attention heads, MLP hidden size.
      head_dim: per-head size; 0 means ``d_model // num_heads`` (see ``head_size``).
      num_layers: stack depth.
      activation: a name of ``ACTIVATION_NAMES``; the ``*glu`` ones are gated.
      dropout, attention_dropout, activation_dropout: residual/embedding, attention-weight and
        MLP-hidden dropout rates, active only with ``train=True``.
      norm: "layernorm" or "rmsnorm". pre_norm: False gives post-LN (original / Marian).
      norm_epsilon: variance epsilon of every norm (PyTorch's LayerNorm, hence Marian, uses 1e-5).
      position: "sinusoidal" | "learned" (tables of ``max_position`` rows added to the
        embeddings), "rope" (rotary, self-attention only) or "t5_relative" (bias buckets:
        ``relative_buckets``, ``relative_max_distance``; one table per stack).
      scale_embeddings: multiply token embeddings by sqrt(d_model).
      scan_layers: ``nn.scan`` the stack (False: Python loop, same maths).
      remat_policy: a name of ``REMAT_NAMES``.
      dtype, param_dtype: compute and storage dtype names (``DTYPE_NAMES``); logits are float32.
      attention_kernel: a name of ``ATTENTION_KERNEL_NAMES``: "auto" runs cuDNN's fused
        attention on an NVIDIA GPU in bfloat16/float16 from 256 keys on and the einsum maths
        elsewhere; see ``models/attention_kernel``. Parameters are the same whichever kernel runs.
    """

    vocab_size: int = 0
    d_model: int = 128
    num_heads: int = 4
    head_dim: int = 0
    mlp_dim: int = 512
    num_layers: int = 2
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
    scale_embeddings: bool = True
    scan_layers: bool = True
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_kernel: str = "auto"

    def __post_init__(self):
        _validate(self)

    @property
    def head_size(self) -> int:
        """Per-head query/key/value size."""
        return self.head_dim or self.d_model // self.num_heads

    @property
    def output_size(self) -> int:
        """Width of the stack's outputs."""
        return self.d_model


@dataclasses.dataclass(frozen=True)
class TransformerEncoderConfig(TransformerConfig):
    """A Transformer encoder; ``input`` names its front end ("tokens" or "features")."""

    input: str = "tokens"
    input_features: int = 0  # float frames: features per position (set from the data)


@dataclasses.dataclass(frozen=True)
class TransformerDecoderConfig(TransformerConfig):
    """A Transformer decoder.

    Attributes:
      tie_output: logits use the target embedding transposed.
      final_logits_bias: a learned logits bias (as in Marian).
    """

    tie_output: bool = True
    final_logits_bias: bool = False


_CHOICES = {
    "activation": ACTIVATION_NAMES,
    "norm": NORM_NAMES,
    "position": POSITION_NAMES,
    "remat_policy": REMAT_NAMES,
    "dtype": DTYPE_NAMES,
    "param_dtype": DTYPE_NAMES,
    "attention_kernel": ATTENTION_KERNEL_NAMES,
}
_POSITIVE = (
    "d_model", "num_heads", "mlp_dim", "num_layers", "max_position", "relative_buckets",
    "relative_max_distance", "norm_epsilon",
)  # fmt: skip


def _validate(cfg: TransformerConfig) -> None:
    owner = type(cfg).__name__
    for field, valid in _CHOICES.items():
        check_choice(owner, field, getattr(cfg, field), valid)
    check_positive(owner, cfg, _POSITIVE)
    check_rates(owner, cfg, ("dropout", "attention_dropout", "activation_dropout"))
    if cfg.vocab_size < 0:
        raise ValueError(f"{owner}.vocab_size must be >= 0, got {cfg.vocab_size}.")
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
    if isinstance(cfg, TransformerEncoderConfig):
        check_choice(owner, "input", cfg.input, INPUT_NAMES)


def check_length(config: TransformerConfig, length: int, what: str) -> None:
    """Rejects sequences that do not fit a position table (static shapes, so before tracing)."""
    if config.position in POSITION_TABLE_NAMES and length > config.max_position:
        raise ValueError(
            f"{what} has length {length} but position={config.position!r} supports at most "
            f"max_position={config.max_position}: raise max_position, shorten the sequences, "
            "or use position='rope' / 't5_relative'."
        )
