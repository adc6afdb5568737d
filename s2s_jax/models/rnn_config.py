"""Hyperparameters of the recurrent encoder and decoder (names only: no layer code here)."""

from __future__ import annotations

import dataclasses

from s2s_jax.models.config_checks import DTYPE_NAMES, check_choice, check_positive, check_rates

CELL_NAMES = ("lstm", "gru")
# Decoder wirings: "none" is the context-vector decoder (Cho et al. 2014); the others name the
# attention over the encoder outputs (``models/rnn_attention.py``).
ATTENTION_NAMES = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat", "multihead")
INPUT_NAMES = ("tokens", "features")
# How a recurrent encoder runs its LSTM layers (``models/cudnn_lstm.py``): "auto" picks cuDNN on
# a GPU for float32 LSTMs and the scanned recurrence elsewhere; the parameters are the same.
LSTM_KERNEL_NAMES = ("auto", "scan", "cudnn")


@dataclasses.dataclass(frozen=True)
class _RNNConfig:
    vocab_size: int = 0
    cell: str = "lstm"
    embed_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    unroll: int = 1
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "cell", self.cell, CELL_NAMES)
        check_choice(owner, "dtype", self.dtype, DTYPE_NAMES)
        check_choice(owner, "param_dtype", self.param_dtype, DTYPE_NAMES)
        check_positive(owner, self, ("embed_dim", "hidden_size", "num_layers", "unroll"))
        check_rates(owner, self, ("dropout",))
        if self.vocab_size < 0:
            raise ValueError(f"{owner}.vocab_size must be >= 0, got {self.vocab_size}.")
        self._validate()

    def _validate(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class RNNEncoderConfig(_RNNConfig):
    """A stacked LSTM/GRU encoder.

    Attributes:
      vocab_size: source token ids (0 for non-token inputs).
      input: its front end, "tokens" (an embedding of ``embed_dim``) or "features" (a
        projection of float frames to ``embed_dim``).
      input_features: float frames: features per position (set from the data).
      cell: "lstm" | "gru". embed_dim: size of the front end's output.
      hidden_size: per direction. num_layers: stacked layers. bidirectional: a backward layer
        per level, outputs ``2 * hidden_size``.
      dropout: between stacked layers (train only).
      unroll: time steps per loop iteration of the time scans (same maths).
      lstm_kernel: how LSTM layers run, a name of ``LSTM_KERNEL_NAMES``: "scan" (the scanned
        recurrence, any backend), "cudnn" (one ``jax.experimental.rnn.lstm`` call per layer;
        GPU, cell "lstm" and dtype "float32" only) or "auto" (cudnn where it can run, scan
        elsewhere; decided when the model is traced). Same parameters either way, so trained
        weights move between kernels (the checkpoint config check still compares this key, as
        it does ``unroll``); padding must be trailing for cudnn. The default is
        "scan": on an H200 (jax 0.11) the scan trained faster than cuDNN at every size
        measured by ``benchmarks/gpu_lstm_check.py`` (cuDNN 0.5-1.0x).
      dtype, param_dtype: compute and storage dtype names.
    """

    input: str = "tokens"
    input_features: int = 0
    bidirectional: bool = False
    lstm_kernel: str = "scan"

    def _validate(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "input", self.input, INPUT_NAMES)
        check_choice(owner, "lstm_kernel", self.lstm_kernel, LSTM_KERNEL_NAMES)
        if self.lstm_kernel == "cudnn" and (self.cell, self.dtype) != ("lstm", "float32"):
            raise ValueError(
                f"{owner}.lstm_kernel='cudnn' runs LSTM cells in float32 only, got "
                f"cell={self.cell!r}, dtype={self.dtype!r}; use lstm_kernel='auto' (cuDNN where "
                "it can run, the scan elsewhere) or 'scan'."
            )

    @property
    def output_size(self) -> int:
        """Width of the encoder outputs."""
        return self.hidden_size * (2 if self.bidirectional else 1)


@dataclasses.dataclass(frozen=True)
class RNNDecoderConfig(_RNNConfig):
    """A stacked LSTM/GRU decoder with attention over the encoder outputs.

    Attributes:
      vocab_size: target token ids.
      attention: a name of ``ATTENTION_NAMES`` ("none": the context-vector decoder).
      num_heads: heads of "multihead" attention (must divide hidden_size).
      input_feeding: Luong input feeding (ignored by "none" and "bahdanau").
      The rest as in ``RNNEncoderConfig``. The decoder starts from the encoder's final states
      when the encoder is recurrent with the same cell (through a Dense+tanh bridge when the
      sizes differ), otherwise from a Dense+tanh of the mean encoder output.
    """

    attention: str = "luong_general"
    num_heads: int = 4
    input_feeding: bool = True

    def _validate(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "attention", self.attention, ATTENTION_NAMES)
        check_positive(owner, self, ("num_heads",))
        if self.attention == "multihead" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads "
                f"{self.num_heads}; pick num_heads dividing hidden_size."
            )
