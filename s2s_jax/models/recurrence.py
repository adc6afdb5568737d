"""LSTM/GRU recurrences over a whole sequence, with a hand-written backward pass.

Autodiff of a scanned cell accumulates the recurrent kernel's gradient inside the backward loop:
one small ``[hidden, batch] x [batch, gates * hidden]`` matmul and a read-modify-write of the
whole accumulator per time step. Here the backward loop only propagates the state gradients and
stacks the gradients of ``h @ kernel``; the kernel gradient is then one large matmul over all
``time * batch`` rows, and the bias and input-projection gradients fall out of the stacked
gradients (as cuDNN and oneDNN do). Same maths as ``rnn.LSTMCell`` / ``rnn.GRUCell`` stepped by
``nn.scan`` (tested); the cells' own single step (``__call__``) runs the same forward functions.

A cell is two step functions over time-major slices (``CELL_STEPS``):
  * ``forward(carry, x, h_proj) -> (new_carry, residuals)``, with ``x`` the gate inputs (input
    projection + bias) and ``h_proj = h @ kernel + recurrent_bias``; the new hidden state is the
    carry's last element, as everywhere in ``rnn``;
  * ``backward(d_new_carry, residuals) -> (d_carry, d_x, d_h_proj)``, ``d_carry`` being the
    gradient that reaches the previous carry other than through ``h_proj``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array
Carry = tuple[Array, ...]


def _sigmoid_grad(s: Array) -> Array:
    return s * (1 - s)


def _lstm_forward(carry: Carry, x: Array, h_proj: Array):
    c, _ = carry
    i, f, g, o = jnp.split(x + h_proj, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    new_c = f * c + i * g
    tanh_c = jnp.tanh(new_c)
    return (new_c, o * tanh_c), (c, jnp.concatenate([i, f, g, o], axis=-1), tanh_c)


def _lstm_backward(d_new: Carry, residuals):
    d_c, d_h = d_new
    c, act, tanh_c = residuals
    i, f, g, o = jnp.split(act, 4, axis=-1)
    d_cell = d_c + d_h * o * (1 - tanh_c * tanh_c)
    d_gates = jnp.concatenate(
        [
            d_cell * g * _sigmoid_grad(i),
            d_cell * c * _sigmoid_grad(f),
            d_cell * i * (1 - g * g),
            d_h * tanh_c * _sigmoid_grad(o),
        ],
        axis=-1,
    )
    return (d_cell * f, jnp.zeros_like(d_h)), d_gates, d_gates


def _gru_forward(carry: Carry, x: Array, h_proj: Array):
    (h,) = carry
    x_r, x_z, x_n = jnp.split(x, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)  # h_n includes the candidate's own bias
    r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,), (h, jnp.concatenate([r, z, n], axis=-1), h_n)


def _gru_backward(d_new: Carry, residuals):
    (d_h,) = d_new
    h, act, h_n = residuals
    r, z, n = jnp.split(act, 3, axis=-1)
    d_n = d_h * (1 - z) * (1 - n * n)
    d_r = d_n * h_n * _sigmoid_grad(r)
    d_z = d_h * (h - n) * _sigmoid_grad(z)
    d_x = jnp.concatenate([d_r, d_z, d_n], axis=-1)
    d_h_proj = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
    return (d_h * z,), d_x, d_h_proj


CELL_STEPS = {"lstm": (_lstm_forward, _lstm_backward), "gru": (_gru_forward, _gru_backward)}


def step_forward(cell: str, carry: Carry, x: Array, h_proj: Array) -> tuple[Carry, tuple]:
    """One step of ``cell``: ``(new carry, residuals)``; see ``CELL_STEPS``."""
    return CELL_STEPS[cell][0](carry, x, h_proj)


def run_recurrence(
    cell: str,
    carry: Carry,
    gate_inputs: Array,
    kernel: Array,
    recurrent_bias: Array,
    mask: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    time_major: bool = False,
) -> tuple[Carry, Array]:
    """Runs ``cell`` over axis 1 of ``gate_inputs`` (axis 0 with ``time_major``).

    Args:
      cell: a key of ``CELL_STEPS``.
      carry: the initial carry, leaves ``[batch, ..., hidden]`` (``(c, h)`` or ``(h,)``).
      gate_inputs: ``[batch, length, ..., gates * hidden]``: input projection plus bias.
      kernel: ``[hidden, gates * hidden]`` recurrent kernel.
      recurrent_bias: ``[gates * hidden]`` added to ``h @ kernel`` (zeros for the LSTM, the
        candidate's bias for the GRU).
      mask: None, or ``[batch, length]`` bool (gate_inputs then ``[batch, length, gates *
        hidden]``): at False positions the carry is held and the output is zero (padding; see
        ``rnn.RecurrentLayer``).
      reverse: run from the last position to the first.
      unroll: time steps per iteration of the compiled loops.
      time_major: ``gate_inputs``, ``mask`` and the outputs have ``length`` first (the loop
        runs over axis 0; batch-major arrays are transposed to it and back).

    Returns:
      ``(final carry, outputs [batch, length, ..., hidden])`` (length first with
      ``time_major``).
    """
    run = _recurrence(cell, mask is not None, reverse, unroll)
    swap = (lambda x: x) if time_major else (lambda x: jnp.swapaxes(x, 0, 1))
    dtype = gate_inputs.dtype
    final, outputs = run(
        tuple(carry),
        swap(gate_inputs),
        kernel.astype(dtype),
        recurrent_bias.astype(dtype),
        None if mask is None else swap(mask),
    )
    return final, swap(outputs)


def _hold(keep: Array | None, new: Carry, old: Carry) -> Carry:
    if keep is None:
        return new
    return tuple(jnp.where(keep[:, None], n, o) for n, o in zip(new, old, strict=True))


@functools.cache
def _recurrence(cell: str, masked: bool, reverse: bool, unroll: int):
    """The custom-VJP recurrence over time-major gate inputs ``[length, batch, ...]``."""
    cell_forward, cell_backward = CELL_STEPS[cell]

    def forward(carry, gates_in, kernel, recurrent_bias, mask):
        def step(state, inputs):
            x, keep = inputs
            h = state[-1]
            new, residuals = cell_forward(state, x, h @ kernel + recurrent_bias)
            out = new[-1] if keep is None else jnp.where(keep[:, None], new[-1], 0.0)
            return _hold(keep, new, state), (out, h, residuals)

        inputs = (gates_in, mask if masked else None)
        final, (outputs, h_prev, residuals) = jax.lax.scan(
            step, carry, inputs, reverse=reverse, unroll=unroll
        )
        return final, outputs, (h_prev, residuals)

    @jax.custom_vjp
    def run(carry, gates_in, kernel, recurrent_bias, mask):
        final, outputs, _ = forward(carry, gates_in, kernel, recurrent_bias, mask)
        return final, outputs

    def run_fwd(carry, gates_in, kernel, recurrent_bias, mask):
        final, outputs, saved = forward(carry, gates_in, kernel, recurrent_bias, mask)
        return (final, outputs), (kernel, mask, saved)

    def run_bwd(saved, cotangents):
        kernel, mask, (h_prev, residuals) = saved
        d_final, d_outputs = cotangents
        kernel_t = kernel.T

        def step(d_state, inputs):
            d_out, keep, cell_residuals = inputs  # d_state: gradient of the carry this step made
            d_new = (*d_state[:-1], d_state[-1] + d_out)
            if keep is not None:  # held positions pass the carry's gradient straight through
                k = keep[:, None]
                d_new = tuple(jnp.where(k, d, 0.0) for d in d_new)
            d_prev, d_x, d_h_proj = cell_backward(d_new, cell_residuals)
            d_prev = (*d_prev[:-1], d_prev[-1] + d_h_proj @ kernel_t)
            if keep is not None:
                held = (jnp.where(k, 0.0, d) for d in d_state)
                d_prev = tuple(p + d for p, d in zip(d_prev, held, strict=True))
            return d_prev, (d_x, d_h_proj)

        inputs = (d_outputs, mask if masked else None, residuals)
        d_carry, (d_gates_in, d_h_proj) = jax.lax.scan(
            step, tuple(d_final), inputs, reverse=not reverse, unroll=unroll
        )
        rows = lambda x: x.reshape(-1, x.shape[-1])  # every (time, batch...) row
        d_kernel = jnp.matmul(
            rows(h_prev).T, rows(d_h_proj), preferred_element_type=jnp.float32
        ).astype(kernel.dtype)
        d_recurrent_bias = jnp.sum(rows(d_h_proj), axis=0, dtype=jnp.float32)
        return d_carry, d_gates_in, d_kernel, d_recurrent_bias.astype(kernel.dtype), None

    run.defvjp(run_fwd, run_bwd)
    return run
