"""The recurrent decoder (models/decoders/rnn.py) after the recurrent encoder, paired by Seq2Seq.

Configs, the pair interface (encode / decode / init_decode / decode_step) and its equivalences:
teacher forcing vs cached steps, source padding, start states, dropout and dtypes.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fast_compile import fast_jit
from model_builders import rnn_config, source_mask

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.models.decoders.rnn import DECODER_STEPS
from s2s_jax.models.registry import pair
from s2s_jax.models.rnn_config import RNNDecoderConfig, RNNEncoderConfig
from s2s_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig

ATTENTIONS = sorted(DECODER_STEPS)
CELLS = ["gru", "lstm"]
AXIS_NAMES = {"embed", "hidden", "mlp", "heads", "kv", "vocab"}
SMALL = dict(src_vocab_size=13, tgt_vocab_size=11, embed_dim=6, hidden_size=8, num_heads=2)
# Equal computations on differently shaped (padded) arrays or through scan vs single steps:
# XLA may tile and sum in another order, moving float32 results by a few ulps (~1e-7) per op
# over a few chained steps. 1e-5 is a wide margin over that and far below the O(0.1) changes
# that reading a PAD position or a wrong carry would cause.
TOL = 1e-5

SRC = jnp.array([[5, 6, 7, 8, EOS_ID], [4, 9, EOS_ID, PAD_ID, PAD_ID]])
SRC_MORE_PADDED = jnp.pad(SRC, ((0, 0), (0, 3)))
MASK, MASK_MORE_PADDED = source_mask(SRC), source_mask(SRC_MORE_PADDED)
TGT_IN = jnp.array([[BOS_ID, 8, 7, 6], [BOS_ID, 9, 4, PAD_ID]])


def _config(cell: str, attention: str, **overrides) -> Seq2SeqConfig:
    """The shared small config.

    LSTM cases use a bidirectional encoder (so the bridge) and GRU cases a deeper unidirectional
    stack (decoder layer 2 reuses encoder layer 1), so together they cover both start-state paths.
    """
    if cell == "lstm":
        overrides = dict(encoder_layers=1, decoder_layers=2, bidirectional=True) | overrides
    else:
        overrides = dict(encoder_layers=2, decoder_layers=3) | overrides
    if attention == "luong_dot":
        overrides["bidirectional"] = False
    return rnn_config(cell=cell, attention=attention, **(SMALL | overrides))


def _init(model: Seq2Seq, key: jax.Array) -> dict:
    variables = model.init(key, SRC, TGT_IN, inputs_mask=MASK, train=False)
    return {"params": nn.meta.unbox(variables)["params"]}


def _random_variables(model: Seq2Seq, seed: int = 0) -> dict:
    """Random normal parameters with the model's shapes and dtypes.

    The equivalences below hold for any parameters; drawing them in numpy avoids compiling the
    initialisers (orthogonal init's QR dominates compile time on CPU) once per config. The real
    initialisers are exercised by the training test and tests/test_rnn.py.
    """
    shapes = jax.eval_shape(functools.partial(_init, model), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


def _step_through(model, variables, memory, cache, beam):
    """decode_step token by token with every beam holding the same tokens."""
    cache = jax.tree.map(lambda x: jnp.repeat(x, beam, axis=1), cache)

    def body(cache, ids_t):
        ids = jnp.repeat(ids_t[:, None], beam, axis=1)
        logits, cache = model.apply(variables, memory, ids, cache, method="decode_step")
        return cache, logits

    cache, logits = jax.lax.scan(body, cache, TGT_IN.T)
    return logits.transpose(1, 0, 2, 3), cache  # [batch, tgt_len, beam, vocab]


@functools.cache
def _outputs(cell: str, attention: str, input_feeding: bool = True) -> dict:
    """Everything the per-(cell, attention) tests check, computed under one compilation."""
    model = pair(_config(cell, attention, input_feeding=input_feeding))

    def run(variables):
        encoded = model.apply(variables, SRC, MASK, train=False, method="encode")
        logits, weights = model.apply(
            variables, encoded, TGT_IN, train=False, return_attention=True, method="decode"
        )
        memory, cache = model.apply(variables, encoded, 4, method="init_decode")
        out = dict(logits=logits, weights=weights, encoded=encoded, memory=memory, cache=cache)
        out["more_padded"] = model.apply(
            variables, SRC_MORE_PADDED, TGT_IN, inputs_mask=MASK_MORE_PADDED, train=False
        )
        out["beam1"], _ = _step_through(model, variables, memory, cache, beam=1)
        out["beam2"], out["cache2"] = _step_through(model, variables, memory, cache, beam=2)
        return out

    variables = _random_variables(model)
    return jax.device_get(fast_jit(run)(variables)) | {"variables": jax.device_get(variables)}


CASES = [(cell, attention) for cell in CELLS for attention in ATTENTIONS]


@pytest.mark.parametrize("cell,attention", CASES)
def test_cached_decoding_matches_teacher_forcing(cell, attention):
    out = _outputs(cell, attention)
    assert out["logits"].shape == (2, 4, 11) and out["logits"].dtype == np.float32
    np.testing.assert_allclose(out["beam1"][:, :, 0], out["logits"], atol=TOL)
    for beam in range(2):
        np.testing.assert_allclose(out["beam2"][:, :, beam], out["logits"], atol=TOL)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ["luong_general", "multihead"])
def test_parallel_teacher_forcing_matches_cached_steps(cell, attention):
    # Without input feeding, `decode` runs the LSTM stack over the whole target sequence and
    # attends for all positions at once (LuongDecoderStep.sequence); decode_step still steps.
    model = pair(_config(cell, attention, input_feeding=False))
    assert model.bind(_random_variables(model)).decoder.step.parallel
    out = _outputs(cell, attention, input_feeding=False)
    np.testing.assert_allclose(out["beam1"][:, :, 0], out["logits"], atol=TOL)
    np.testing.assert_allclose(out["beam2"][:, :, 1], out["logits"], atol=TOL)


@pytest.mark.parametrize("cell,attention", CASES)
def test_memory_is_per_batch_and_cache_per_beam(cell, attention):
    out = _outputs(cell, attention)
    assert {leaf.shape[0] for leaf in jax.tree.leaves(out["memory"])} == {2}
    assert {leaf.shape[:2] for leaf in jax.tree.leaves(out["cache"])} == {(2, 1)}
    assert {leaf.shape[:2] for leaf in jax.tree.leaves(out["cache2"])} == {(2, 2)}
    has_feed = attention not in ("none", "bahdanau")  # Luong wirings feed a_{t-1}
    assert ("feed" in out["cache"]) == has_feed


@pytest.mark.parametrize("cell,attention", CASES)
def test_more_source_padding_leaves_logits_unchanged(cell, attention):
    out = _outputs(cell, attention)
    real = np.asarray(TGT_IN != PAD_ID)
    np.testing.assert_allclose(out["more_padded"][real], out["logits"][real], atol=TOL)


@pytest.mark.parametrize("cell,attention", CASES)
def test_attention_weights_are_a_distribution_over_real_source(cell, attention):
    weights = _outputs(cell, attention)["weights"]
    assert weights.shape == (2, 4, 5)
    if attention == "none":
        np.testing.assert_array_equal(weights, 0.0)
        return
    assert (weights >= 0.0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=TOL)
    np.testing.assert_array_equal(weights[1, :, 3:], 0.0)


SHAPE_CASES = [
    (cell, attention, bidirectional, layers)
    for cell in CELLS
    for attention in ATTENTIONS
    for bidirectional in (False, True)
    for layers in ((1, 1), (2, 3))
    if not (attention == "luong_dot" and bidirectional)
]


@pytest.mark.parametrize("cell,attention,bidirectional,layers", SHAPE_CASES)
def test_shapes_and_axis_names_for_every_combination(cell, attention, bidirectional, layers):
    encoder_layers, decoder_layers = layers
    model = pair(
        _config(
            cell,
            attention,
            bidirectional=bidirectional,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )
    )
    out = _trace(model)
    dirs = 2 if bidirectional else 1
    assert out["logits"].shape == (2, 4, 11) and out["logits"].dtype == jnp.float32
    assert out["step_logits"].shape == (2, 3, 11) and out["step_logits"].dtype == jnp.float32
    assert out["encoded"]["outputs"].shape == (2, 5, dirs * 8)
    assert len(out["encoded"]["final"]) == layers[0]
    assert len(out["cache_in"]["carry"]) == layers[1]
    assert {leaf.shape for leaf in jax.tree.leaves(out["cache_in"])} == {(2, 3, 8)}
    # A decoding loop carries the cache: a step must not change its structure, shapes or dtypes.
    assert out["cache_out"] == out["cache_in"]
    _assert_logical_names(out["boxed"])
    params = out["boxed"]
    assert set(params) == {"encoder", "decoder"}
    assert set(params["encoder"]) == {"embedding", "stack"}
    bridged = {"bridge"} if bidirectional else set()  # final states of another size
    assert set(params["decoder"]) == {"embedding", "step", "output_proj"} | bridged


def _trace(model: Seq2Seq) -> dict:
    """Shapes and dtypes (no compilation) of init, __call__, and a 3-beam decode_step."""

    def steps(model):
        encoded = model.encode(SRC, MASK, train=False)
        memory, cache = model.init_decode(encoded, 4)
        cache = jax.tree.map(lambda x: jnp.repeat(x, 3, axis=1), cache)  # 3 beams
        step_logits, new_cache = model.decode_step(memory, TGT_IN[:, :3], cache)
        return dict(encoded=encoded, step_logits=step_logits, cache_in=cache, cache_out=new_cache)

    def run(key):
        logits, boxed = model.init_with_output(key, SRC, TGT_IN, inputs_mask=MASK, train=False)
        variables = {"params": nn.meta.unbox(boxed)["params"]}
        return model.apply(variables, method=steps) | dict(boxed=boxed["params"], logits=logits)

    return jax.eval_shape(run, jax.random.key(0))


def _is_box(x) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def _assert_logical_names(boxed_params):
    leaves = jax.tree.leaves(boxed_params, is_leaf=_is_box)
    assert leaves and all(_is_box(leaf) for leaf in leaves), "every param carries axis names"
    for leaf in leaves:
        assert len(leaf.names) == len(leaf.value.shape)
        assert set(leaf.names) <= AXIS_NAMES and len(set(leaf.names)) == len(leaf.names)


def test_decoder_initial_state_comes_from_encoder_layers():
    # Unidirectional: decoder layer i starts from encoder layer min(i, last), no bridge params.
    out = _outputs("gru", "luong_general")
    assert not {"bridge", "mean_bridge"} & set(out["variables"]["params"]["decoder"])
    for layer, source in enumerate((0, 1, 1)):
        np.testing.assert_array_equal(
            out["cache"]["carry"][layer][0][:, 0], out["encoded"]["final"][source][0]
        )
    np.testing.assert_array_equal(out["cache"]["feed"], 0.0)  # a_0 = 0


def test_bidirectional_bridge_is_dense_tanh_of_concatenated_states():
    out = _outputs("lstm", "bahdanau")  # one bidirectional encoder layer, two decoder layers
    for layer in range(2):
        for i in range(2):  # c and h
            dense = out["variables"]["params"]["decoder"]["bridge"][f"layer_{layer}_{i}"]
            final = out["encoded"]["final"][0][i]
            assert final.shape == (2, 16)  # [fwd; bwd]
            expected = np.tanh(final @ dense["kernel"] + dense["bias"])
            # float32 matmul of size 16 + tanh, numpy vs XLA: a few ulps.
            np.testing.assert_allclose(out["cache"]["carry"][layer][i][:, 0], expected, atol=1e-6)


def test_decoder_starts_from_the_mean_output_when_final_states_do_not_fit():
    # An LSTM encoder's (c, h) finals cannot start a GRU decoder: each decoder layer starts from
    # a Dense+tanh of the encoder outputs' mean over the real source positions instead (the
    # path a Transformer encoder takes too).
    base = _config("gru", "bahdanau")  # decoder: 3 GRU layers
    model = pair(dataclasses.replace(base, encoder=dataclasses.replace(base.encoder, cell="lstm")))
    variables = _random_variables(model)

    def run(variables):
        encoded = model.apply(variables, SRC, MASK, train=False, method="encode")
        return encoded, model.apply(variables, encoded, 4, method="init_decode")[1]

    encoded, cache = jax.device_get(fast_jit(run)(variables))
    params = variables["params"]["decoder"]
    assert "mean_bridge" in params and "bridge" not in params
    mask = np.asarray(MASK)[..., None]
    mean = (encoded["outputs"] * mask).sum(1) / mask.sum(1)
    for layer in range(3):
        dense = params["mean_bridge"][f"layer_{layer}_0"]
        expected = np.tanh(mean @ dense["kernel"] + dense["bias"])
        # float32 mean of 5 rows, matmul of size 8 and tanh, numpy vs XLA: a few ulps.
        np.testing.assert_allclose(cache["carry"][layer][0][:, 0], expected, atol=1e-6)


def test_dropout_is_active_only_in_training():
    model = pair(_config("lstm", "luong_general", decoder_layers=2, dropout=0.3))

    def run(variables):
        def apply(seed, train):
            rngs = {"dropout": jax.random.key(seed)}
            return model.apply(variables, SRC, TGT_IN, inputs_mask=MASK, train=train, rngs=rngs)

        return [apply(1, True), apply(2, True), apply(1, False), apply(2, False)]

    train_1, train_2, eval_1, eval_2 = fast_jit(run)(_random_variables(model))
    assert np.abs(train_1 - train_2).max() > 1e-3
    np.testing.assert_array_equal(eval_1, eval_2)


@pytest.mark.parametrize("dtype,param_dtype", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_compute_and_storage_dtypes_are_honoured(dtype, param_dtype):
    model = pair(_config("lstm", "multihead", dtype=dtype, param_dtype=param_dtype))
    out = _trace(model)
    params = nn.meta.unbox(out["boxed"])
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(param_dtype)}
    assert out["encoded"]["outputs"].dtype == jnp.dtype(dtype)
    assert {leaf.dtype for leaf in jax.tree.leaves(out["cache_in"])} == {jnp.dtype(dtype)}
    assert out["cache_out"] == out["cache_in"]
    assert out["logits"].dtype == jnp.float32 and out["step_logits"].dtype == jnp.float32


def _reversal_batch():
    tokens = np.random.default_rng(0).integers(4, 10, size=(4, 5))
    eos = np.full((4, 1), EOS_ID)
    targets = np.concatenate([tokens[:, ::-1], eos], axis=1)
    decoder_inputs = np.concatenate([np.full((4, 1), BOS_ID), targets[:, :-1]], axis=1)
    return jnp.asarray(np.concatenate([tokens, eos], axis=1)), jnp.asarray(decoder_inputs), targets


def test_luong_general_model_overfits_tiny_reversal_batch():
    model = pair(rnn_config(10, 10, embed_dim=16, hidden_size=32, attention="luong_general"))
    inputs, decoder_inputs, targets = _reversal_batch()
    mask = source_mask(inputs)
    init = fast_jit(
        lambda key: nn.meta.unbox(
            model.init(key, inputs, decoder_inputs, inputs_mask=mask, train=False)
        )
    )
    params = init(jax.random.key(0))
    optimizer = optax.adam(1e-2)

    def loss_fn(params):
        logits = model.apply(params, inputs, decoder_inputs, inputs_mask=mask, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    def step(state, _):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    train = fast_jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), length=100)[1])
    losses = np.asarray(train(params))
    assert losses[-1] < 0.1 * losses[0], losses[::20]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            dict(cell="rnn"),
            r"RNNEncoderConfig.cell='rnn' is not supported; choose one of: \('lstm', 'gru'\)",
        ),
        (
            dict(attention="luong"),
            r"RNNDecoderConfig.attention='luong' is not supported; choose one of: \('none'",
        ),
        (dict(dtype="float64"), r"dtype='float64' is not supported"),
        (dict(param_dtype="int8"), r"param_dtype='int8' is not supported"),
        (dict(hidden_size=0), "hidden_size must be positive, got 0"),
        (dict(decoder_layers=0), "RNNDecoderConfig.num_layers must be positive, got 0"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(attention="multihead", num_heads=3), "not divisible by num_heads"),
        (dict(attention="luong_dot", bidirectional=True), "use luong_general"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        rnn_config(**(SMALL | overrides))


def test_config_is_frozen_with_documented_defaults():
    encoder, decoder = RNNEncoderConfig(vocab_size=7), RNNDecoderConfig(vocab_size=9)
    for config in (encoder, decoder):
        assert config.cell == "lstm" and config.num_layers == 1 and config.dropout == 0.0
        assert (config.embed_dim, config.hidden_size) == (64, 128)
    assert decoder.attention == "luong_general"
    assert decoder.input_feeding and not encoder.bidirectional and decoder.num_heads == 4
    assert encoder.input == "tokens" and encoder.output_size == 128
    assert RNNEncoderConfig(bidirectional=True).output_size == 256
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoder.cell = "gru"


def test_init_decode_rejects_non_positive_max_length():
    model = pair(_config("gru", "none"))

    def run(key):
        variables = _init(model, key)
        encoded = model.apply(variables, SRC, MASK, train=False, method="encode")
        return model.apply(variables, encoded, 0, method="init_decode")

    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        jax.eval_shape(run, jax.random.key(0))
