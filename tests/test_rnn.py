"""Tests for s2s_jax.models.rnn: cells, masked scanned layers, the encoder, stacked cells."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import fast_jit

from s2s_jax.models import rnn

HIDDEN = 5
FEATURES = 3
# Both sides compute the same float32 ops; only the summation order inside matmuls and the
# batch/length shapes XLA tiles for differ, which moves results by a few ulps (~1e-7) per step.
# 1e-5 leaves a wide margin for that yet is far below the O(0.1) change any leak of padding into
# the recurrence causes.
TOL = 1e-5


def _unboxed_init(module, *args, **kwargs):
    return nn.meta.unbox(module.init(jax.random.key(0), *args, **kwargs))["params"]


def _random_params(module, *args, seed=0, **kwargs):
    """Random normal parameters shaped like ``module``'s.

    The equivalences tested here hold for any parameters; drawing them in numpy avoids compiling
    the initialisers (orthogonal init's QR is slow to compile on CPU) for every module.
    """
    shapes = jax.eval_shape(lambda: _unboxed_init(module, *args, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


def _padded_batch():
    """Inputs [2, 6, FEATURES] and a right-padded mask with lengths 4 and 6."""
    x = jax.random.normal(jax.random.key(1), (2, 6, FEATURES))
    lengths = jnp.array([4, 6])
    return x, jnp.arange(6)[None, :] < lengths[:, None], lengths


def _flax_lstm_params(params, input_kernel):
    """Splits fused LSTM params (gate order i, f, g, o) into flax.linen.LSTMCell's layout."""
    fused = (input_kernel, params["recurrent_kernel"], params["bias"])
    ins, recs, biases = (jnp.split(a, 4, axis=-1) for a in fused)
    out = {}
    for gate, w_in, w_rec, b in zip("ifgo", ins, recs, biases, strict=True):
        out[f"i{gate}"] = {"kernel": w_in}
        out[f"h{gate}"] = {"kernel": w_rec, "bias": b}
    return out


def _flax_gru_params(params, input_kernel):
    """Splits fused GRU params (gate order r, z, n) into flax.linen.GRUCell's layout."""
    fused = (input_kernel, params["recurrent_kernel"], params["bias"])
    ins, recs, biases = (jnp.split(a, 3, axis=-1) for a in fused)
    out = {f"i{g}": {"kernel": w, "bias": b} for g, w, b in zip("rzn", ins, biases, strict=True)}
    out["hr"] = {"kernel": recs[0]}
    out["hz"] = {"kernel": recs[1]}
    out["hn"] = {"kernel": recs[2], "bias": params["recurrent_bias"]}
    return out


REFERENCES = {
    "lstm": (nn.LSTMCell, _flax_lstm_params),
    "gru": (nn.GRUCell, _flax_gru_params),
}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_matches_flax_reference_cell(cell):
    cls = rnn.CELLS[cell]
    x = jax.random.normal(jax.random.key(2), (4, 3, FEATURES))  # [time, batch, features]
    carry = cls.zero_carry((3,), HIDDEN, jnp.float32)
    w_in = jax.random.normal(jax.random.key(3), (FEATURES, cls.num_gates * HIDDEN))
    params = _random_params(cls(HIDDEN), carry, x[0] @ w_in)
    ref_cls, convert = REFERENCES[cell]

    @fast_jit
    def run(params):
        outs, ref_outs = [], []
        state, ref_state = carry, carry if cell == "lstm" else carry[0]
        for x_t in x:
            state, out = cls(HIDDEN).apply({"params": params}, state, x_t @ w_in)
            ref_state, ref_out = ref_cls(HIDDEN).apply(
                {"params": convert(params, w_in)}, ref_state, x_t
            )
            outs.append(out)
            ref_outs.append(ref_out)
        return jnp.stack(outs), jnp.stack(ref_outs), state

    outs, ref_outs, state = run(params)
    assert not np.allclose(outs[0], outs[-1], atol=1e-3)  # the state actually evolves
    np.testing.assert_allclose(outs, ref_outs, atol=TOL)
    np.testing.assert_array_equal(state[-1], outs[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initialisation_forget_bias_and_orthogonal_gate_blocks(cell):
    cls = rnn.CELLS[cell]
    carry = cls.zero_carry((1,), HIDDEN, jnp.float32)
    params = _unboxed_init(cls(HIDDEN), carry, jnp.zeros((1, cls.num_gates * HIDDEN)))
    for block in np.split(np.asarray(params["recurrent_kernel"]), cls.num_gates, axis=-1):
        np.testing.assert_allclose(block.T @ block, np.eye(HIDDEN), atol=1e-5)  # f32 QR
    if cell == "lstm":  # gate order i, f, g, o: only the forget gate starts at 1
        expected = np.concatenate([np.zeros(HIDDEN), np.ones(HIDDEN), np.zeros(2 * HIDDEN)])
        np.testing.assert_array_equal(params["bias"], expected)
    else:
        np.testing.assert_array_equal(params["bias"], 0.0)


def _cell_loop(cell, params, x, reverse=False):
    """Unrolled reference: Python loop over time of the layer's cell, no padding."""
    cls = rnn.CELLS[cell]
    carry = cls.zero_carry(x.shape[:1], HIDDEN, jnp.float32)
    gates = x @ params["input_proj"]["kernel"]
    steps = range(x.shape[1])
    outputs = {}
    for t in reversed(steps) if reverse else steps:
        carry, outputs[t] = cls(HIDDEN).apply({"params": params["cell"]}, carry, gates[:, t])
    return jnp.stack([outputs[t] for t in steps], axis=1), carry


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_scanned_layer_matches_unrolled_loop(cell, reverse):
    x = jax.random.normal(jax.random.key(4), (2, 5, FEATURES))
    mask = jnp.ones((2, 5), bool)
    layer = rnn.RecurrentLayer(cell, HIDDEN, reverse=reverse)
    params = _random_params(layer, x, mask)
    outputs, final = fast_jit(lambda p: layer.apply({"params": p}, x, mask))(params)
    ref_outputs, ref_final = fast_jit(lambda p: _cell_loop(cell, p, x, reverse))(params)
    np.testing.assert_allclose(outputs, ref_outputs, atol=TOL)
    for got, want in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)


def _encode(encoder, params, x, mask):
    return fast_jit(lambda p, x, m: encoder.apply({"params": p}, x, m, train=False))(
        params, x, mask
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_is_invariant_to_padding(cell, bidirectional):
    x, mask, lengths = _padded_batch()
    encoder = rnn.RecurrentStack(cell, HIDDEN, num_layers=2, bidirectional=bidirectional)
    params = _random_params(encoder, x, mask, train=False)
    outputs, finals = _encode(encoder, params, x, mask)
    dirs = 2 if bidirectional else 1
    assert outputs.shape == (2, 6, dirs * HIDDEN)
    np.testing.assert_array_equal(outputs[0, 4:], 0.0)  # PAD outputs are exactly zero
    for i, length in enumerate(lengths.tolist()):
        alone = x[i : i + 1, :length]
        out_alone, finals_alone = _encode(encoder, params, alone, jnp.ones((1, length), bool))
        np.testing.assert_allclose(outputs[i : i + 1, :length], out_alone, atol=TOL)
        for got, want in zip(jax.tree.leaves(finals), jax.tree.leaves(finals_alone), strict=True):
            assert got.shape == (2, dirs * HIDDEN)
            np.testing.assert_allclose(got[i : i + 1], want, atol=TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_direction_runs_each_sequence_reversed_within_its_length(cell):
    x, mask, lengths = _padded_batch()
    encoder = rnn.RecurrentStack(cell, HIDDEN, bidirectional=True)
    params = _random_params(encoder, x, mask, train=False)
    outputs, finals = _encode(encoder, params, x, mask)
    forward_layer = rnn.RecurrentLayer(cell, HIDDEN)  # reads the bwd params, runs forward
    for i, length in enumerate(lengths.tolist()):
        reversed_seq = x[i : i + 1, :length][:, ::-1]
        ref_out, ref_final = fast_jit(forward_layer.apply)(
            {"params": params["layer_0_bwd"]}, reversed_seq, jnp.ones((1, length), bool)
        )
        np.testing.assert_allclose(outputs[i, :length, HIDDEN:], ref_out[0, ::-1], atol=TOL)
        for got, want in zip(finals[0], ref_final, strict=True):
            np.testing.assert_allclose(got[i, HIDDEN:], want[0], atol=TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stacked_cells_step_matches_scanned_encoder(cell):
    x = jax.random.normal(jax.random.key(5), (2, 4, FEATURES))
    mask = jnp.ones((2, 4), bool)
    encoder = rnn.RecurrentStack(cell, HIDDEN, num_layers=2)
    params = _random_params(encoder, x, mask, train=False)
    stacked = rnn.StackedCells(cell, HIDDEN, num_layers=2)
    stacked_params = {}
    for layer in range(2):
        stacked_params[f"input_proj_{layer}"] = params[f"layer_{layer}"]["input_proj"]
        stacked_params[f"cell_{layer}"] = params[f"layer_{layer}"]["cell"]

    @fast_jit
    def run(params, stacked_params):
        outputs, finals = encoder.apply({"params": params}, x, mask, train=False)
        carry = tuple(rnn.CELLS[cell].zero_carry((2,), HIDDEN, jnp.float32) for _ in range(2))
        tops = []
        for t in range(4):
            carry, top = stacked.apply({"params": stacked_params}, carry, x[:, t], train=False)
            tops.append(top)
        return outputs, finals, jnp.stack(tops, axis=1), carry

    outputs, finals, tops, carry = run(params, stacked_params)
    np.testing.assert_allclose(tops, outputs, atol=TOL)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)


def test_stacked_cells_rejects_wrong_number_of_layer_carries():
    stacked = rnn.StackedCells("gru", HIDDEN, num_layers=2)
    carry = (rnn.GRUCell.zero_carry((1,), HIDDEN, jnp.float32),)
    with pytest.raises(ValueError, match="one carry per layer"):
        stacked.init(jax.random.key(0), carry, jnp.zeros((1, FEATURES)), train=False)


def test_encoder_dropout_only_in_training():
    x, mask, _ = _padded_batch()
    encoder = rnn.RecurrentStack("lstm", HIDDEN, num_layers=2, dropout=0.5)
    params = _random_params(encoder, x, mask, train=False)

    @fast_jit
    def run(params):
        def apply(train, seed):
            rngs = {"dropout": jax.random.key(seed)}
            return encoder.apply({"params": params}, x, mask, train=train, rngs=rngs)[0]

        return apply(True, 0), apply(True, 1), apply(False, 0), apply(False, 1)

    train_0, train_1, eval_0, eval_1 = run(params)
    assert not np.allclose(train_0, train_1, atol=1e-3)
    np.testing.assert_array_equal(eval_0, eval_1)
    np.testing.assert_array_equal(train_0[0, 4:], 0.0)  # PAD stays zero under dropout


def test_compute_and_storage_dtypes_are_separate():
    x, mask, _ = _padded_batch()
    encoder = rnn.RecurrentStack("gru", HIDDEN, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    params = jax.eval_shape(lambda: _unboxed_init(encoder, x, mask, train=False))
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    outputs, finals = jax.eval_shape(
        lambda p: encoder.apply({"params": p}, x, mask, train=False), params
    )
    assert outputs.dtype == jnp.bfloat16
    assert finals[0][0].dtype == jnp.bfloat16


def test_params_carry_logical_axis_names():
    x, mask, _ = _padded_batch()
    encoder = rnn.RecurrentStack("lstm", HIDDEN, num_layers=2, bidirectional=True)
    boxed = jax.eval_shape(lambda: encoder.init(jax.random.key(0), x, mask, train=False))["params"]
    names = {
        jax.tree_util.keystr(path): leaf.names
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned)
        )
    }
    assert names["['layer_1_bwd']['input_proj']['kernel']"] == ("embed", "mlp")
    assert names["['layer_0_fwd']['cell']['recurrent_kernel']"] == ("hidden", "mlp")
    assert names["['layer_0_fwd']['cell']['bias']"] == ("mlp",)
    assert len(names) == 12  # every param is boxed: 4 layers x (input, recurrent, bias)


def test_unknown_cell_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown RNN cell 'rnn'.*\['gru', 'lstm'\]"):
        rnn.cell_type("rnn")
    x, mask, _ = _padded_batch()
    with pytest.raises(ValueError, match="valid cells"):
        rnn.RecurrentLayer("rnn", HIDDEN).init(jax.random.key(0), x, mask)
