"""Tests for s2s_jax.models.lstm_sequence: values and gradients equal autodiff of the cell."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.lstm_sequence import lstm_sequence
from s2s_jax.models.rnn import LSTMCell, RecurrentLayer, StackedCells

B, T, H = 3, 5, 4
TOL = 1e-5


def _reference(carry, gate_inputs, kernel, bias, mask, *, reverse):
    """The cell's own step under lax.scan, differentiated by JAX."""
    cell = LSTMCell(H)
    params = {"params": {"recurrent_kernel": kernel, "bias": bias}}

    def step(state, inputs):
        x, keep = inputs
        new, out = cell.apply(params, state, x)
        if keep is None:
            return new, out
        k = keep[:, None]
        held = tuple(jnp.where(k, n, o) for n, o in zip(new, state, strict=True))
        return held, jnp.where(k, out, 0.0)

    xs = (jnp.swapaxes(gate_inputs, 0, 1), None if mask is None else jnp.swapaxes(mask, 0, 1))
    final, outputs = jax.lax.scan(step, carry, xs, reverse=reverse)
    return final, jnp.swapaxes(outputs, 0, 1)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    carry = (normal(B, H), normal(B, H))
    return carry, normal(B, T, 4 * H), normal(H, 4 * H) * 0.5, normal(4 * H) * 0.1


MASKS = {
    "none": None,
    # trailing padding, a fully padded row's tail, and a hole in the middle
    "padded": jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool),
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("unroll", [1, 2])
def test_values_and_gradients_match_autodiff_of_the_cell(mask_name, reverse, unroll):
    mask = MASKS[mask_name]
    args = _inputs()
    cotangent = jax.random.normal(jax.random.key(1), (B, T, H))

    def loss(fn, carry, gate_inputs, kernel, bias):
        (c, h), outputs = fn(carry, gate_inputs, kernel, bias, mask)
        # every output feeds the loss: outputs, and both parts of the final carry
        return jnp.sum(outputs * cotangent) + jnp.sum(jnp.sin(c)) + jnp.sum(h * h)

    fused = functools.partial(lstm_sequence, reverse=reverse, unroll=unroll)
    reference = functools.partial(_reference, reverse=reverse)
    (final, outputs), (ref_final, ref_outputs) = (f(*args, mask) for f in (fused, reference))
    np.testing.assert_allclose(outputs, ref_outputs, atol=TOL)
    for got, want in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)

    grads = jax.jit(jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2, 3)))(*args)
    want = jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2, 3))(*args)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, atol=TOL, rtol=TOL)
    if mask is not None:  # padded positions get no input gradient
        assert float(jnp.abs(grads[1][~mask]).max()) == 0.0


def _layer_grads(module, variables, *args):
    def loss(params):
        out = module.apply({"params": params}, *args)
        return sum(jnp.sum(jnp.tanh(leaf)) for leaf in jax.tree.leaves(out))

    return jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_layer_uses_the_fused_recurrence_with_the_scan_gradients(reverse, monkeypatch):
    x = jax.random.normal(jax.random.key(0), (B, T, 6))
    mask = MASKS["padded"]
    layer = RecurrentLayer("lstm", H, reverse=reverse)
    variables = layer.init(jax.random.key(1), x, mask)
    fused = _layer_grads(layer, variables, x, mask)
    monkeypatch.setattr(LSTMCell, "fused_sequence", False)  # the generic nn.scan path
    scanned = _layer_grads(layer, variables, x, mask)
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(scanned), strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def test_stacked_cells_over_time_match_stepping(monkeypatch):
    stack = StackedCells("lstm", H, num_layers=2)
    carry = tuple(LSTMCell.zero_carry((B,), H, jnp.float32) for _ in range(2))
    x = jax.random.normal(jax.random.key(0), (B, T, 6))
    variables = stack.init(jax.random.key(1), carry, x[:, 0], train=False)

    def over_time(params):
        return stack.apply({"params": params}, carry, x, train=False, over_time=True)

    def stepped(params):
        state, outs = carry, []
        for t in range(T):
            state, out = stack.apply({"params": params}, state, x[:, t], train=False)
            outs.append(out)
        return state, jnp.stack(outs, 1)

    for got, want in zip(
        jax.tree.leaves(over_time(variables["params"])),
        jax.tree.leaves(stepped(variables["params"])),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=TOL)
    scalar = lambda f: lambda p: sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(f(p)))
    got = jax.grad(scalar(over_time))(variables["params"])
    want = jax.grad(scalar(stepped))(variables["params"])
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=TOL, rtol=TOL)


def test_time_major_is_the_transposed_batch_major_run():
    carry, gate_inputs, kernel, bias = _inputs(seed=3)
    mask = MASKS["padded"]
    final, outputs = lstm_sequence(carry, gate_inputs, kernel, bias, mask)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    final_t, outputs_t = lstm_sequence(
        carry, swap(gate_inputs), kernel, bias, swap(mask), time_major=True
    )
    np.testing.assert_allclose(swap(outputs_t), outputs, atol=TOL)
    for got, want in zip(final_t, final, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)
