"""Tests for s2s_jax.models.recurrence: values and gradients equal autodiff of the cells."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.rnn import CELLS, RecurrentLayer, StackedCells

B, T, H = 3, 5, 4
TOL = 1e-5

MASKS = {
    "none": None,
    # trailing padding, a fully padded row's tail, and a hole in the middle
    "padded": jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool),
}


def _cell_and_params(name, seed=0):
    """A cell and random params (biases too, so every term of the maths is exercised)."""
    cls = CELLS[name]
    cell = cls(H)
    carry = cls.zero_carry((B,), H, jnp.float32)
    shapes = jax.eval_shape(cell.init, jax.random.key(0), carry, jnp.zeros((B, cls.num_gates * H)))
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    params = [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return cell, jax.tree.unflatten(tree, params)


def _scanned(cell, variables, carry, gate_inputs, mask, *, reverse):
    """The reference: the cell's own step under lax.scan, differentiated by JAX."""

    def step(state, inputs):
        x, keep = inputs
        new, out = cell.apply(variables, state, x)
        if keep is None:
            return new, out
        k = keep[:, None]
        held = tuple(jnp.where(k, n, o) for n, o in zip(new, state, strict=True))
        return held, jnp.where(k, out, 0.0)

    xs = (jnp.swapaxes(gate_inputs, 0, 1), None if mask is None else jnp.swapaxes(mask, 0, 1))
    final, outputs = jax.lax.scan(step, carry, xs, reverse=reverse)
    return final, jnp.swapaxes(outputs, 0, 1)


def _fused(cell, variables, carry, gate_inputs, mask, **kw):
    return cell.apply(variables, carry, gate_inputs, mask, method="sequence", **kw)


def _inputs(name, seed=1):
    cls = CELLS[name]
    k1, k2 = jax.random.split(jax.random.key(seed))
    carry = tuple(
        jax.random.normal(k, (B, H))
        for k in jax.random.split(k1, len(cls.zero_carry((B,), H, jnp.float32)))
    )
    return carry, jax.random.normal(k2, (B, T, cls.num_gates * H))


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("mask_name", sorted(MASKS))
@pytest.mark.parametrize("reverse", [False, True])
def test_values_and_gradients_match_autodiff_of_the_cell(name, mask_name, reverse):
    mask = MASKS[mask_name]
    cell, variables = _cell_and_params(name)
    carry, gate_inputs = _inputs(name)
    cotangent = jax.random.normal(jax.random.key(2), (B, T, H))

    def loss(run, variables, carry, gate_inputs):
        final, outputs = run(cell, variables, carry, gate_inputs, mask, reverse=reverse)
        # every output feeds the loss: the outputs and each part of the final carry
        return jnp.sum(outputs * cotangent) + sum(jnp.sum(jnp.sin(p)) for p in final)

    (final, outputs), (want_final, want_outputs) = (
        run(cell, variables, carry, gate_inputs, mask, reverse=reverse)
        for run in (_fused, _scanned)
    )
    np.testing.assert_allclose(outputs, want_outputs, atol=TOL)
    for got, want in zip(final, want_final, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)

    args = (variables, carry, gate_inputs)
    grads = jax.jit(jax.grad(functools.partial(loss, _fused), argnums=(0, 1, 2)))(*args)
    want = jax.grad(functools.partial(loss, _scanned), argnums=(0, 1, 2))(*args)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, atol=TOL, rtol=TOL)
    if mask is not None:  # padded positions get no input gradient
        assert float(jnp.abs(grads[2][~mask]).max()) == 0.0


@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_and_time_major_give_the_same_run(name):
    cell, variables = _cell_and_params(name, seed=3)
    carry, gate_inputs = _inputs(name, seed=4)
    mask = MASKS["padded"]
    final, outputs = _fused(cell, variables, carry, gate_inputs, mask)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    for kw, x, m, back in [
        (dict(unroll=2), gate_inputs, mask, lambda y: y),
        (dict(time_major=True), swap(gate_inputs), swap(mask), swap),
    ]:
        other_final, other_outputs = _fused(cell, variables, carry, x, m, **kw)
        np.testing.assert_allclose(back(other_outputs), outputs, atol=TOL)
        for got, want in zip(other_final, final, strict=True):
            np.testing.assert_allclose(got, want, atol=TOL)


def _layer_grads(module, variables, *args):
    def loss(params):
        out = module.apply({"params": params}, *args)
        return sum(jnp.sum(jnp.tanh(leaf)) for leaf in jax.tree.leaves(out))

    return jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_layer_fused_path_has_the_scan_gradients(name, reverse, monkeypatch):
    x = jax.random.normal(jax.random.key(0), (B, T, 6))
    mask = MASKS["padded"]
    layer = RecurrentLayer(name, H, reverse=reverse)
    variables = layer.init(jax.random.key(1), x, mask)
    fused = _layer_grads(layer, variables, x, mask)
    monkeypatch.setattr(CELLS[name], "fused_sequence", False)  # the generic nn.scan path
    scanned = _layer_grads(layer, variables, x, mask)
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(scanned), strict=True):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_stacked_cells_over_time_match_stepping(name):
    cls = CELLS[name]
    stack = StackedCells(name, H, num_layers=2)
    carry = tuple(cls.zero_carry((B,), H, jnp.float32) for _ in range(2))
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
