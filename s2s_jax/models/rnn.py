"""Recurrent building blocks: LSTM/GRU cells, masked scanned layers and the RNN encoder.

Cells take *pre-projected* gate inputs (``x @ W_in``, no bias): a scanned layer projects the
whole input sequence with one matmul outside the time loop, so only the recurrent half
(``h @ W_rec``) runs inside ``nn.scan``. A decoder, whose input depends on the previous step,
projects one step at a time with the same cells (``StackedCells``).

A carry is a tuple of arrays ``[..., hidden]``: ``(c, h)`` for the LSTM, ``(h,)`` for the GRU;
its last element is always the hidden state that the layer outputs.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models.cudnn_lstm import lstm_layer, pack_lstm_weights, resolve_lstm_kernel
from s2s_jax.models.recurrence import run_recurrence, step_forward

Array = jax.Array
Carry = tuple[Array, ...]
Dtype = Any
Initializer = Callable[..., Array]

RECURRENT_AXES = ("hidden", "mlp")
INPUT_AXES = ("embed", "mlp")


def dense_kernel_init(axes: tuple[str, str]) -> Initializer:
    """The kernel initialiser of ``logical_dense`` (LeCun normal, carrying axis names)."""
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def logical_dense(
    features: int,
    axes: tuple[str, str],
    *,
    dtype: Dtype,
    param_dtype: Dtype,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Dense:
    """A ``nn.Dense`` whose kernel ``[in, features]`` and bias ``[features]`` carry axis names.

    Args:
      features: output size.
      axes: logical names of the kernel's (input, output) axes; the bias gets the output name.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      use_bias: whether to add a bias.
      name: module name (leave None inside ``setup``, where the attribute names it).

    Returns:
      The (unbound) Dense module.
    """
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=dense_kernel_init(axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[-1:]),
        name=name,
    )


def _per_gate(init: Initializer, num_gates: int) -> Initializer:
    """Initialises each gate's ``[hidden, hidden]`` block of a fused kernel independently.

    An orthogonal init of the fused ``[hidden, gates*hidden]`` matrix would only make its rows
    orthonormal; per-gate blocks keep every gate's recurrence orthogonal.
    """

    def init_fn(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
        rows, cols = shape
        keys = jax.random.split(key, num_gates)
        blocks = [init(k, (rows, cols // num_gates), dtype) for k in keys]
        return jnp.concatenate(blocks, axis=-1)

    return init_fn


def _lstm_bias_init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
    """Zeros except a forget-gate bias of 1, so early training does not forget everything."""
    del key
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


class _Cell(nn.Module):
    """What the cells share: one step (``__call__``) and a whole known sequence (``sequence``).

    Both run the cell's maths from ``recurrence.CELL_STEPS`` on the same params; ``sequence``
    adds the hand-written backward pass (``recurrence.run_recurrence``), which layers use
    instead of scanning ``__call__`` (``fused_sequence``). A cell declares its params in
    ``setup`` (``recurrent_kernel`` ``[hidden, gates * hidden]`` among them) and says where its
    biases go (``_biases``).

    Attributes:
      hidden_size: size of the hidden state (and of the LSTM's ``c``).
      dtype: compute dtype (also the carry's dtype).
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kind: ClassVar[str]
    num_gates: ClassVar[int]
    fused_sequence: ClassVar[bool] = True

    def _biases(self) -> tuple[Array | None, Array]:
        """``(bias added to the gate inputs or None, bias added to h @ recurrent_kernel)``.

        Abstract: every concrete cell (``LSTMCell``, ``GRUCell``) defines it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define _biases (see _Cell).")

    def __call__(self, carry: Carry, gate_inputs: Array) -> tuple[Carry, Array]:
        """One step.

        Args:
          carry: ``(c, h)`` (LSTM) or ``(h,)`` (GRU), each ``[..., hidden]``.
          gate_inputs: ``[..., gates * hidden]``, the input projection ``x @ W_in``.

        Returns:
          ``(new carry, new h)``.
        """
        input_bias, recurrent_bias = self._biases()
        x = gate_inputs if input_bias is None else gate_inputs + input_bias
        h_proj = carry[-1] @ self.recurrent_kernel.astype(self.dtype) + recurrent_bias
        new, _ = step_forward(self.kind, carry, x, h_proj)
        new = tuple(part.astype(self.dtype) for part in new)
        return new, new[-1]

    def sequence(
        self,
        carry: Carry,
        gate_inputs: Array,
        mask: Array | None = None,
        *,
        reverse: bool = False,
        unroll: int = 1,
        time_major: bool = False,
    ) -> tuple[Carry, Array]:
        """Every step of ``gate_inputs`` ``[batch, length, gates * hidden]`` (``[length, batch,
        gates * hidden]`` with ``time_major``), see ``recurrence.run_recurrence``.

        Returns ``(final carry, outputs [batch, length, hidden])`` (length first with
        ``time_major``); with a ``mask`` the carry is held at False positions and their outputs
        are zero, as ``RecurrentLayer`` needs.
        """
        input_bias, recurrent_bias = self._biases()
        x = gate_inputs if input_bias is None else gate_inputs + input_bias
        return run_recurrence(
            self.kind,
            tuple(part.astype(self.dtype) for part in carry),
            x.astype(self.dtype),
            self.recurrent_kernel,
            recurrent_bias,
            mask,
            reverse=reverse,
            unroll=unroll,
            time_major=time_major,
        )

    def _recurrent_kernel(self) -> Array:
        init = _per_gate(nn.initializers.orthogonal(), self.num_gates)
        shape = (self.hidden_size, self.num_gates * self.hidden_size)
        return self.param(
            "recurrent_kernel",
            nn.with_logical_partitioning(init, RECURRENT_AXES),
            shape,
            self.param_dtype,
        )


class LSTMCell(_Cell):
    """LSTM cell (gate order i, f, g, o) over pre-projected inputs; see ``_Cell``."""

    kind: ClassVar[str] = "lstm"
    num_gates: ClassVar[int] = 4

    def setup(self):
        self.recurrent_kernel = self._recurrent_kernel()
        bias_init = nn.with_logical_partitioning(_lstm_bias_init, ("mlp",))
        self.bias = self.param("bias", bias_init, (4 * self.hidden_size,), self.param_dtype)

    def _biases(self) -> tuple[Array | None, Array]:
        # gates = x + h @ W + b: the bias may sit on either side; the recurrent side lets the
        # hand-written backward pass return its gradient directly.
        return None, self.bias.astype(self.dtype)

    @staticmethod
    def zero_carry(batch_shape: tuple[int, ...], hidden_size: int, dtype: Dtype) -> Carry:
        """The all-zeros carry ``(c, h)``, each ``[*batch_shape, hidden]``."""
        zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
        return (zeros, zeros)


class GRUCell(_Cell):
    """GRU cell (gate order r, z, n; Cho et al. 2014) over pre-projected inputs; see ``_Cell``.

    ``n = tanh(x_n + b_n + r * (h @ W_hn + b_hn))``, ``h' = (1 - z) * n + z * h``.
    """

    kind: ClassVar[str] = "gru"
    num_gates: ClassVar[int] = 3

    def setup(self):
        self.recurrent_kernel = self._recurrent_kernel()
        zeros = nn.initializers.zeros_init()
        bias_init = nn.with_logical_partitioning(zeros, ("mlp",))
        self.bias = self.param("bias", bias_init, (3 * self.hidden_size,), self.param_dtype)
        # The candidate's recurrent term is gated by r, so it needs its own bias.
        n_bias_init = nn.with_logical_partitioning(zeros, ("hidden",))
        self.recurrent_bias = self.param(
            "recurrent_bias", n_bias_init, (self.hidden_size,), self.param_dtype
        )

    def _biases(self) -> tuple[Array | None, Array]:
        # Only the candidate's h @ W_hn gets a recurrent bias (r and z have none).
        recurrent = jnp.pad(self.recurrent_bias, (2 * self.hidden_size, 0))
        return self.bias.astype(self.dtype), recurrent.astype(self.dtype)

    @staticmethod
    def zero_carry(batch_shape: tuple[int, ...], hidden_size: int, dtype: Dtype) -> Carry:
        """The all-zeros carry ``(h,)``, ``h`` ``[*batch_shape, hidden]``."""
        return (jnp.zeros((*batch_shape, hidden_size), dtype),)


CELLS: dict[str, type[LSTMCell] | type[GRUCell]] = {"lstm": LSTMCell, "gru": GRUCell}


def cell_type(name: str) -> type[LSTMCell] | type[GRUCell]:
    """Looks a cell class up in ``CELLS``, with a clear error for unknown names."""
    if name not in CELLS:
        raise ValueError(f"Unknown RNN cell {name!r}; valid cells are {sorted(CELLS)}.")
    return CELLS[name]


def time_scan(step: Callable[..., Any], *, reverse: bool = False, unroll: int = 1) -> Callable:
    """``nn.scan`` of ``step(cell, carry, xs)`` over axis 1 (time), sharing the cell's params."""
    return nn.scan(
        step,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=1,
        out_axes=1,
        reverse=reverse,
        unroll=unroll,
    )


def _masked_cell_step(
    cell: nn.Module, carry: Carry, inputs: tuple[Array, Array]
) -> tuple[Carry, Array]:
    """One scanned time step that leaves the carry untouched at PAD positions.

    Keeping the old carry (not zeroing it) is what makes a padded sequence end in the same
    state as the unpadded one, whichever direction the scan runs.
    """
    gate_inputs, mask = inputs
    new_carry, output = cell(carry, gate_inputs)
    keep = mask[:, None]
    new_carry = tuple(jnp.where(keep, new, old) for new, old in zip(new_carry, carry, strict=True))
    return new_carry, jnp.where(keep, output, jnp.zeros_like(output))


class RecurrentLayer(nn.Module):
    """One recurrent layer scanned over time, respecting a padding mask.

    With ``reverse=True`` the scan runs from the last position to the first. Because the carry
    is held at PAD positions, trailing padding leaves the initial state untouched and the layer
    sees exactly each sequence reversed within its own length.

    Attributes:
      cell: a key of ``CELLS``.
      hidden_size: size of the hidden state.
      reverse: scan from the end of the sequence.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      unroll: time steps per iteration of the compiled loop (``lax.scan``'s ``unroll``): same
        maths, fewer loop iterations and a larger program to compile.
    """

    cell: str
    hidden_size: int
    reverse: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    unroll: int = 1

    @nn.compact
    def __call__(self, inputs: Array, mask: Array) -> tuple[Array, Carry]:
        """Runs the layer over a batch.

        Args:
          inputs: ``[batch, length, features]``.
          mask: ``[batch, length]`` bool, True at real tokens.

        Returns:
          ``(outputs, final_carry)``: outputs ``[batch, length, hidden]`` (zero at PAD), and the
          carry after the last real token, each leaf ``[batch, hidden]``.
        """
        cls = cell_type(self.cell)
        dense_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        project = logical_dense(
            cls.num_gates * self.hidden_size, INPUT_AXES, name="input_proj", **dense_kw
        )
        carry = cls.zero_carry(inputs.shape[:1], self.hidden_size, self.dtype)
        cell = cls(self.hidden_size, self.dtype, self.param_dtype, name="cell")
        if cls.fused_sequence:
            # Time-major from the (narrow) inputs on: the wide gate inputs and their gradients
            # then never need a transpose.
            gate_inputs = project(jnp.swapaxes(inputs, 0, 1))
            gate_inputs = nn.with_logical_constraint(gate_inputs, ("length", "batch", "mlp"))
            kw = dict(reverse=self.reverse, unroll=self.unroll, time_major=True)
            final, outputs = cell.sequence(carry, gate_inputs, jnp.swapaxes(mask, 0, 1), **kw)
            return jnp.swapaxes(outputs, 0, 1), final
        gate_inputs = nn.with_logical_constraint(project(inputs), ("batch", "length", "mlp"))
        scan = time_scan(_masked_cell_step, reverse=self.reverse, unroll=self.unroll)
        final, outputs = scan(cell, carry, (gate_inputs, mask))
        return outputs, final


class _DenseKernel(nn.Module):
    """Declares an ``nn.Dense``'s ``kernel`` (same name, shape, init and axes) and returns it."""

    features: int
    axes: tuple[str, str]
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, in_features: int) -> Array:
        """The kernel ``[in_features, features]``."""
        shape = (in_features, self.features)
        return self.param("kernel", dense_kernel_init(self.axes), shape, self.param_dtype)


class LSTMLayerParams(nn.Module):
    """An LSTM ``RecurrentLayer``'s parameters (same names, shapes, init), without its scan.

    For kernels that run whole layers themselves (``cudnn_lstm``): the parameter tree stays the
    scanned layer's, so a checkpoint moves between kernels.

    Attributes:
      hidden_size: size of the hidden state.
      param_dtype: storage dtype of the parameters.
    """

    hidden_size: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array, Array]:
        """``(input kernel [in_features, 4*hidden], recurrent kernel [hidden, 4*hidden], bias
        [4*hidden])``, gate order i, f, g, o."""
        gates = LSTMCell.num_gates * self.hidden_size
        input_kernel = _DenseKernel(gates, INPUT_AXES, self.param_dtype, name="input_proj")
        cell = LSTMCell(self.hidden_size, param_dtype=self.param_dtype, name="cell")
        return input_kernel(in_features), cell.recurrent_kernel, cell.bias


class RecurrentStack(nn.Module):
    """Multi-layer (optionally bidirectional) recurrent encoder over embedded inputs.

    Layers are a Python loop rather than a scan over layers: the first layer's input size
    (embed) differs from the others' (hidden or 2*hidden), so their parameters cannot stack.
    With a ``kernel`` other than "scan" each layer (both directions) is one call of a kernel of
    ``cudnn_lstm.KERNELS`` on the same parameters; dropout between layers stays this module's.

    Attributes:
      cell: a key of ``CELLS``.
      hidden_size: hidden size per direction.
      num_layers: stacked layers.
      bidirectional: add a backward layer per level and concatenate ``[fwd; bwd]``.
      dropout: dropout rate between layers (train only, rng ``"dropout"``).
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      unroll: time steps per loop iteration of every layer's scan (see ``RecurrentLayer``).
      kernel: "scan" (``RecurrentLayer``), "auto" or a key of ``cudnn_lstm.KERNELS``, resolved
        when traced by ``cudnn_lstm.resolve_lstm_kernel`` (which raises where it cannot run).
        The kernels assume trailing padding.
    """

    cell: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    unroll: int = 1
    kernel: str = "scan"

    @nn.compact
    def __call__(
        self, inputs: Array, mask: Array, *, train: bool
    ) -> tuple[Array, tuple[Carry, ...]]:
        """Encodes a batch.

        Args:
          inputs: ``[batch, length, embed]`` embedded tokens.
          mask: ``[batch, length]`` bool, True at real tokens.
          train: enables dropout.

        Returns:
          ``(outputs, finals)``: outputs ``[batch, length, dirs * hidden]`` (zero at PAD) from
          the top layer; finals, one carry per layer whose leaves are ``[batch, dirs * hidden]``
          (forward state first for bidirectional encoders).
        """
        kernel = resolve_lstm_kernel(self.kernel, self.cell, self.dtype)
        x, finals = inputs, []
        for layer in range(self.num_layers):
            if layer > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            if kernel == "scan":
                x, final = self._layer(layer, x, mask)
            else:
                x, final = self._kernel_layer(layer, x, mask, kernel)
            x = nn.with_logical_constraint(x, ("batch", "length", "hidden"))
            finals.append(final)
        return x, tuple(finals)

    def _layer(self, layer: int, x: Array, mask: Array) -> tuple[Array, Carry]:
        kw = dict(cell=self.cell, hidden_size=self.hidden_size, unroll=self.unroll)
        kw.update(dtype=self.dtype, param_dtype=self.param_dtype)
        if not self.bidirectional:
            return RecurrentLayer(name=f"layer_{layer}", **kw)(x, mask)
        fwd_out, fwd_final = RecurrentLayer(name=f"layer_{layer}_fwd", **kw)(x, mask)
        bwd_out, bwd_final = RecurrentLayer(reverse=True, name=f"layer_{layer}_bwd", **kw)(x, mask)
        final = tuple(
            jnp.concatenate(pair, axis=-1) for pair in zip(fwd_final, bwd_final, strict=True)
        )
        return jnp.concatenate([fwd_out, bwd_out], axis=-1), final

    def _kernel_layer(self, layer: int, x: Array, mask: Array, kernel: str) -> tuple[Array, Carry]:
        # The scanned layers' names, so the parameter tree is the same for every kernel.
        names = [f"layer_{layer}_fwd", f"layer_{layer}_bwd"] if self.bidirectional else None
        params = [
            LSTMLayerParams(self.hidden_size, self.param_dtype, name=name)(x.shape[-1])
            for name in names or [f"layer_{layer}"]
        ]
        # resolve_lstm_kernel has checked that the compute dtype is float32.
        weights = pack_lstm_weights(params).astype(jnp.float32)
        return lstm_layer(
            x.astype(jnp.float32),
            mask,
            weights,
            hidden_size=self.hidden_size,
            bidirectional=self.bidirectional,
            kernel=kernel,
        )


class StackedCells(nn.Module):
    """A multi-layer recurrent stack for decoders: one time step, or a whole known sequence.

    One step (``over_time=False``) is what decoding and input-feeding decoders need. With
    ``over_time=True`` (teacher forcing without input feeding) every layer's inputs for all time
    steps are projected with one matmul and only the recurrence is scanned, as in
    ``RecurrentLayer``; the parameters are the same either way.

    Attributes:
      cell: a key of ``CELLS``.
      hidden_size: hidden size of every layer.
      num_layers: stacked layers.
      dropout: dropout rate between layers (train only, rng ``"dropout"``).
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    cell: str
    hidden_size: int
    num_layers: int = 1
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        carry: tuple[Carry, ...],
        inputs: Array,
        *,
        train: bool,
        over_time: bool = False,
        unroll: int = 1,
    ) -> tuple[tuple[Carry, ...], Array]:
        """One step, or every step of a sequence, through every layer.

        Args:
          carry: one carry per layer, leaves ``[..., hidden]`` (``[batch, ..., hidden]``).
          inputs: ``[..., features]``; with ``over_time``, ``[batch, length, ..., features]``.
          train: enables dropout between layers.
          over_time: run the whole sequence on axis 1 of ``inputs``.
          unroll: time steps per loop iteration of the scans (``over_time`` only).

        Returns:
          ``(new_carry, top_hidden)`` with top_hidden ``[..., hidden]`` (with ``over_time``:
          ``[batch, length, ..., hidden]``, and the carry after the last step).
        """
        if len(carry) != self.num_layers:
            raise ValueError(
                f"StackedCells has {self.num_layers} layers but got a carry for {len(carry)}; "
                "pass one carry per layer."
            )
        cls = cell_type(self.cell)
        dense_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        time_major = over_time and cls.fused_sequence  # see RecurrentLayer
        if not over_time:
            step = _cell_step
        elif time_major:
            step = functools.partial(_fused_sequence_step, unroll=unroll)
        else:
            step = time_scan(_cell_step, unroll=unroll)
        x, new_carry = (jnp.swapaxes(inputs, 0, 1) if time_major else inputs), []
        for layer, layer_carry in enumerate(carry):
            if layer > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            proj = logical_dense(
                cls.num_gates * self.hidden_size, INPUT_AXES, name=f"input_proj_{layer}", **dense_kw
            )
            cell = cls(self.hidden_size, self.dtype, self.param_dtype, name=f"cell_{layer}")
            layer_carry, x = step(cell, layer_carry, proj(x))
            new_carry.append(layer_carry)
        return tuple(new_carry), (jnp.swapaxes(x, 0, 1) if time_major else x)


def _cell_step(cell: nn.Module, carry: Carry, gate_inputs: Array) -> tuple[Carry, Array]:
    return cell(carry, gate_inputs)


def _fused_sequence_step(
    cell: nn.Module, carry: Carry, gate_inputs: Array, *, unroll: int
) -> tuple[Carry, Array]:
    return cell.sequence(carry, gate_inputs, unroll=unroll, time_major=True)
