"""The LSTM recurrence over a whole sequence, with a hand-written backward pass.

Autodiff of a scanned cell accumulates the recurrent kernel's gradient inside the backward loop:
one small ``[hidden, batch] x [batch, 4 * hidden]`` matmul and a read-modify-write of the whole
``[hidden, 4 * hidden]`` accumulator per time step. Here the backward loop only propagates the
state gradients and stacks the gate gradients; the kernel gradient is then one large matmul over
all ``time * batch`` rows, and the bias and input-projection gradients fall out of the stacked
gate gradients (as cuDNN and oneDNN do). Same maths as ``LSTMCell`` stepped by ``nn.scan``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def lstm_sequence(
    carry: tuple[Array, Array],
    gate_inputs: Array,
    kernel: Array,
    bias: Array,
    mask: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    time_major: bool = False,
) -> tuple[tuple[Array, Array], Array]:
    """Runs the LSTM (gate order i, f, g, o) over axis 1 of ``gate_inputs``.

    Args:
      carry: ``(c, h)``, each ``[batch, ..., hidden]``.
      gate_inputs: ``[batch, length, ..., 4 * hidden]``, the input projection ``x @ W_in``.
      kernel: ``[hidden, 4 * hidden]`` recurrent kernel.
      bias: ``[4 * hidden]``.
      mask: None, or ``[batch, length]`` bool (gate_inputs then ``[batch, length, 4 *
        hidden]``): at False positions the carry is held and the output is zero (padding;
        see ``rnn.RecurrentLayer``).
      reverse: run from the last position to the first.
      unroll: time steps per iteration of the compiled loops.
      time_major: ``gate_inputs``, ``mask`` and the outputs have ``length`` first instead
        (the loop runs over axis 0; batch-major arrays are transposed to it and back).

    Returns:
      ``(final (c, h), outputs [batch, length, ..., hidden])``.
    """
    run = _recurrence(mask is not None, reverse, unroll)
    swap = (lambda x: x) if time_major else (lambda x: jnp.swapaxes(x, 0, 1))
    gates = swap(gate_inputs + bias.astype(gate_inputs.dtype))
    final, outputs = run(
        carry, gates, kernel.astype(gate_inputs.dtype), None if mask is None else swap(mask)
    )
    return final, swap(outputs)


def _gates(gates: Array) -> tuple[Array, Array, Array, Array]:
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


@functools.cache
def _recurrence(masked: bool, reverse: bool, unroll: int):
    """The custom-VJP recurrence over time-major inputs ``[length, batch, 4 * hidden]``."""

    def forward(carry, gates_in, kernel, mask):
        def step(state, inputs):
            c, h = state
            x, keep = inputs
            i, f, g, o = _gates(x + h @ kernel)
            new_c = f * c + i * g
            tanh_c = jnp.tanh(new_c)
            new_h = o * tanh_c
            if keep is not None:
                k = keep[:, None]
                out = jnp.where(k, new_h, jnp.zeros_like(new_h))
                new_c, new_h = jnp.where(k, new_c, c), jnp.where(k, new_h, h)
            else:
                out = new_h
            residuals = (c, h, jnp.concatenate([i, f, g, o], axis=-1), tanh_c)
            return (new_c, new_h), (out, residuals)

        inputs = (gates_in, mask if masked else None)
        final, (outputs, residuals) = jax.lax.scan(
            step, tuple(carry), inputs, reverse=reverse, unroll=unroll
        )
        return final, outputs, residuals

    @jax.custom_vjp
    def run(carry, gates_in, kernel, mask):
        final, outputs, _ = forward(carry, gates_in, kernel, mask)
        return final, outputs

    def run_fwd(carry, gates_in, kernel, mask):
        final, outputs, residuals = forward(carry, gates_in, kernel, mask)
        return (final, outputs), (kernel, mask, residuals)

    def run_bwd(saved, cotangents):
        kernel, mask, (c_prev, h_prev, acts, tanh_c) = saved
        (d_c_final, d_h_final), d_outputs = cotangents
        kernel_t = kernel.T

        def step(state, inputs):
            d_c, d_h = state  # gradients w.r.t. the carry this step produced
            d_out, keep, c, act, tc = inputs
            i, f, g, o = jnp.split(act, 4, axis=-1)
            d_new_h = d_h + d_out
            d_new_c = d_c
            if keep is not None:
                k = keep[:, None]
                zeros = jnp.zeros_like(d_h)
                d_new_h, d_new_c = jnp.where(k, d_new_h, zeros), jnp.where(k, d_c, zeros)
                held_c, held_h = jnp.where(k, zeros, d_c), jnp.where(k, zeros, d_h)
            d_cell = d_new_c + d_new_h * o * (1 - tc * tc)
            d_gates = jnp.concatenate(
                [
                    d_cell * g * i * (1 - i),
                    d_cell * c * f * (1 - f),
                    d_cell * i * (1 - g * g),
                    d_new_h * tc * o * (1 - o),
                ],
                axis=-1,
            )
            d_c_prev = d_cell * f
            d_h_prev = d_gates @ kernel_t
            if keep is not None:
                d_c_prev, d_h_prev = d_c_prev + held_c, d_h_prev + held_h
            return (d_c_prev, d_h_prev), d_gates

        inputs = (d_outputs, mask if masked else None, c_prev, acts, tanh_c)
        d_carry, d_gates = jax.lax.scan(
            step, (d_c_final, d_h_final), inputs, reverse=not reverse, unroll=unroll
        )
        rows = lambda x: x.reshape(-1, x.shape[-1])  # every (time, batch...) row
        d_kernel = jnp.matmul(
            rows(h_prev).T, rows(d_gates), preferred_element_type=jnp.float32
        ).astype(kernel.dtype)
        return d_carry, d_gates, d_kernel, None

    run.defvjp(run_fwd, run_bwd)
    return run
