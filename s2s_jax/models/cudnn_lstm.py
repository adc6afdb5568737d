"""LSTM layers through ``jax.experimental.rnn`` (cuDNN), on the scanned layers' parameters.

``rnn.RecurrentStack`` keeps one parameter layout whichever kernel runs it, so a checkpoint moves
between CPU, GPU and TPU runs: per layer and direction ``input_proj/kernel`` ``[in, 4*hidden]``,
``cell/recurrent_kernel`` ``[hidden, 4*hidden]`` and ``cell/bias`` ``[4*hidden]``, gate order
i, f, g, o. ``pack_lstm_weights`` turns one layer's directions into the kernel's flat weight
vector on every call (a few transposes, small next to the recurrence), and ``lstm_layer`` runs a
layer, both directions in one kernel call, with the scanned layer's padding semantics.

``KERNELS`` maps a name to the function that runs the packed layer: "cudnn" is
``jax.experimental.rnn.lstm`` (GPU only); "reference" is its pure-JAX reference ``lstm_ref`` on
the unpacked weights, which runs anywhere and is how the CPU tests and ``benchmarks/
gpu_lstm_check.py --tiny`` exercise the packing and the whole module path.

Measured on an H200 (jax 0.11.2, that script), cuDNN trained 0.5-1.0x as fast as the scan with
its hand-written backward pass at every size tried, so the config's default stays "scan".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import rnn as experimental_rnn

Array = jax.Array
# (x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, bidirectional) -> (y, h_n, c_n)
Kernel = Callable[..., tuple[Array, Array, Array]]

GPU_BACKENDS = ("gpu", "cuda")


def _cudnn(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, bidirectional):
    # Positional: the static arguments are lstm's custom_vjp nondiff_argnums. Precision stays
    # None, so jax.default_matmul_precision decides whether cuDNN may use TF32.
    return experimental_rnn.lstm(
        x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, 1, 0.0, bidirectional
    )


def _reference(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, bidirectional):
    unpacked = experimental_rnn.unpack_lstm_weights(
        weights, input_size, hidden_size, 1, bidirectional
    )
    return experimental_rnn.lstm_ref(
        x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, 1, 0.0, bidirectional
    )


# Looked up at call time, so a test may swap an entry (monkeypatch.setitem).
KERNELS: dict[str, Kernel] = {"cudnn": _cudnn, "reference": _reference}


def on_gpu() -> bool:
    """Whether JAX's default backend is a GPU (where the "cudnn" kernel lowers)."""
    return jax.default_backend() in GPU_BACKENDS


def resolve_lstm_kernel(name: str, cell: str, dtype: Any) -> str:
    """The kernel a ``RecurrentStack`` runs: "scan" or a key of ``KERNELS``.

    Args:
      name: "scan", "auto" or a key of ``KERNELS`` (``RNNEncoderConfig.lstm_kernel`` offers
        "auto", "scan" and "cudnn"; "reference" is for tests and benchmarks).
      cell: the stack's cell name.
      dtype: the stack's compute dtype.

    Returns:
      "scan" for "scan", and for "auto" unless the cell is an LSTM in float32 on a GPU (then
      "cudnn"); a kernel name otherwise, once checked to be able to run here.

    Raises:
      ValueError: an unknown name, or a kernel that cannot run this layer here.
    """
    if name == "scan":
        return name
    usable = cell == "lstm" and jnp.dtype(dtype) == jnp.float32
    if name == "auto":
        return "cudnn" if usable and on_gpu() else "scan"
    if name not in KERNELS:
        choices = ("auto", "scan", *KERNELS)
        raise ValueError(f"Unknown LSTM kernel {name!r}; choose one of {choices}.")
    reasons = []
    if cell != "lstm":
        reasons.append(f"it runs LSTM cells only, not cell={cell!r}")
    if jnp.dtype(dtype) != jnp.float32:
        reasons.append(f"it computes in float32 only, not dtype={jnp.dtype(dtype).name}")
    if name == "cudnn" and not on_gpu():
        reasons.append(f"it needs a GPU, and JAX's default backend is {jax.default_backend()!r}")
    if reasons:
        raise ValueError(
            f"lstm_kernel={name!r} cannot run here: {'; '.join(reasons)}. Use "
            "lstm_kernel='auto' (cuDNN where it can run, the scan elsewhere) or 'scan'."
        )
    return name


def pack_lstm_weights(directions: Sequence[tuple[Array, Array, Array]]) -> Array:
    """Packs one layer's LSTM parameters into ``jax.experimental.rnn``'s flat weight vector.

    The kernel's layout (PyTorch's names): per direction ``W_ih`` ``[4*hidden, in]`` then
    ``W_hh`` ``[4*hidden, hidden]``, then per direction ``b_ih`` and ``b_hh`` ``[4*hidden]``,
    rows in gate order i, f, g, o as ours. Our input projection has no bias, so ``b_ih`` is zero
    and the cell's bias is ``b_hh``.

    Args:
      directions: ``(input_kernel [in, 4*hidden], recurrent_kernel [hidden, 4*hidden],
        bias [4*hidden])`` per direction, forward first, as ``rnn.RecurrentLayer`` stores them.

    Returns:
      ``[get_num_params_in_lstm(in, hidden, 1, len(directions) == 2)]``.
    """
    matrices = [w.T.reshape(-1) for w_in, w_rec, _ in directions for w in (w_in, w_rec)]
    biases = [b for _, _, bias in directions for b in (jnp.zeros_like(bias), bias)]
    return jnp.concatenate(matrices + biases)


def lstm_layer(
    x: Array,
    mask: Array,
    weights: Array,
    *,
    hidden_size: int,
    bidirectional: bool,
    kernel: str = "cudnn",
) -> tuple[Array, tuple[Array, Array]]:
    """One (optionally bidirectional) LSTM layer in one kernel call, like ``RecurrentLayer``.

    The kernel takes ``seq_lengths``, so padding must be trailing (as the data pipeline makes
    it): each direction then sees exactly the real tokens, the backward one reversed within each
    sequence's own length, as the scanned layers do.

    Args:
      x: ``[batch, length, features]`` float32.
      mask: ``[batch, length]`` bool, True at real tokens, padding trailing.
      weights: ``pack_lstm_weights`` of this layer's directions.
      hidden_size: per direction.
      bidirectional: whether ``weights`` hold a backward direction.
      kernel: a key of ``KERNELS``.

    Returns:
      ``(outputs, (c, h))``: outputs ``[batch, length, dirs*hidden]`` ``[fwd; bwd]``, zero at
      PAD; the final carry after each sequence's real tokens, leaves ``[batch, dirs*hidden]``
      (forward state first); all-zero for an empty sequence, as the scan leaves it.
    """
    dirs = 2 if bidirectional else 1
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
    zeros = jnp.zeros((dirs, x.shape[0], hidden_size), x.dtype)
    # An empty row runs one step (kernels read at least one) whose results are masked below.
    y, h_n, c_n = KERNELS[kernel](
        x,
        zeros,
        zeros,
        weights,
        jnp.maximum(lengths, 1),
        input_size=x.shape[-1],
        hidden_size=hidden_size,
        bidirectional=bidirectional,
    )
    outputs = jnp.where(mask[..., None], y, 0.0)
    nonempty = (lengths > 0)[:, None]
    final = tuple(jnp.where(nonempty, jnp.concatenate(list(s), axis=-1), 0.0) for s in (c_n, h_n))
    return outputs, final
