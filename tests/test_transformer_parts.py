"""The Transformer encoder and decoder (models/encoders/transformer.py,
models/decoders/transformer.py) paired by Seq2Seq: configs, masks, positions, cached decoding,
layouts, dtypes, parameters and training behaviour."""

import functools
import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_builders import replace_parts, source_mask, transformer_config

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding import hypotheses
from s2s_jax.models.registry import pair
from s2s_jax.models.seq2seq import Seq2Seq, Seq2SeqConfig
from s2s_jax.models.transformer_config import POSITION_NAMES
from s2s_jax.models.transformer_layers import stack_layer_params, unstack_layer_params

# float32 on CPU: compared paths differ only in summation order and masked-slot layout.
TOL = 1e-5
VOCAB = 20
SRC = jnp.array([[5, 6, 7, 8, 9, PAD_ID], [4, 11, 12, 13, 14, 15]])
MASK = source_mask(SRC)
# Two hypotheses per source (beam 2): [batch, beam, tgt_len], BOS first.
HYPS = jnp.array(
    [
        [[BOS_ID, 9, 8, 7, 6], [BOS_ID, 5, 5, 10, 4]],
        [[BOS_ID, 15, 14, 13, 12], [BOS_ID, 3, 7, 7, 2]],
    ]
)
TGT = HYPS[:, 0]
LOGICAL_NAMES = {"vocab", "embed", "mlp", "heads", "kv", "layers", None}
# This file compiles ~20 small programs on a shared CPU. LLVM's optimisation passes dominate
# their compile time and buy nothing at these sizes; turning them off halves the file's run
# time. Float32 results are unaffected (no fast-math either way), so tolerances stay as they are.
jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)


def _config(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, **overrides) -> Seq2SeqConfig:
    fields = dict(d_model=32, num_heads=4, mlp_dim=64, dropout=0.0)
    return transformer_config(src_vocab_size, tgt_vocab_size, **{**fields, **overrides})


def _shapes(cfg: Seq2SeqConfig):
    """Boxed parameter shapes and logical names, from tracing ``init`` (nothing compiles)."""
    init = functools.partial(pair(cfg).init, train=False)
    return jax.eval_shape(init, jax.random.key(0), SRC, TGT, inputs_mask=MASK)


@functools.cache
def _params(cfg: Seq2SeqConfig):
    """Random parameters with ``init``'s tree: tracing init is cheap where compiling it costs
    seconds per config, and random (not 1/0) norm scales and biases exercise every term."""
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        centre = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(centre + rng.normal(0.0, 0.2, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(_shapes(cfg)))


@functools.cache
def _forward(cfg: Seq2SeqConfig):
    """One jitted eval-mode forward per config, shared by every test using that config."""
    return jit(functools.partial(pair(cfg).apply, train=False))


def _logits(cfg, params=None, src=SRC, tgt=TGT):
    params = _params(cfg) if params is None else params
    return _forward(cfg)(params, src, tgt, inputs_mask=source_mask(src))


# ---------------------------------------------------------------------------------------------
# Config


def test_config_rejects_unknown_choice_listing_valid_values():
    with pytest.raises(ValueError, match="swiglu"):
        _config(activation="tanh")
    with pytest.raises(ValueError, match="t5_relative"):
        _config(position="alibi")
    with pytest.raises(ValueError, match="dots_with_no_batch_dims"):
        _config(remat_policy="some")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(share_embeddings=True, tgt_vocab_size=30), "one vocabulary for both sides"),
        (dict(num_heads=5), "divides d_model"),
        (dict(dropout=1.0), "dropout"),
        (dict(encoder_layers=0), "TransformerEncoderConfig.num_layers must be positive"),
        (dict(decoder_layers=0), "TransformerDecoderConfig.num_layers must be positive"),
        (dict(position="rope", head_dim=5), "even head size"),
        (dict(relative_buckets=2), "buckets >= 4"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        _config(**overrides)


def test_head_size_defaults_to_d_model_over_heads():
    for side in ("encoder", "decoder"):
        assert getattr(_config(), side).head_size == 8
        assert getattr(_config(head_dim=6), side).head_size == 6


# ---------------------------------------------------------------------------------------------
# Shapes, masks, positions


def test_shapes_and_attention():
    cfg = _config()
    params = _params(cfg)
    with_attention = lambda m, src, mask, tgt: m.decode(
        m.encode(src, mask, train=False), tgt, train=False, return_attention=True
    )
    apply = jit(functools.partial(pair(cfg).apply, method=with_attention))
    logits, attention = apply(params, SRC, MASK, TGT)
    assert logits.shape == (2, 5, VOCAB) and logits.dtype == jnp.float32
    assert attention.shape == (2, 5, 6)
    np.testing.assert_allclose(attention.sum(-1), jnp.ones((2, 5)), atol=TOL)
    np.testing.assert_array_equal(attention[0, :, 5], jnp.zeros(5))  # PAD source position
    np.testing.assert_allclose(logits, _logits(cfg, params), atol=TOL)


def test_all_pad_source_gives_finite_logits():
    cfg = _config()
    logits = _logits(cfg, src=SRC.at[0].set(PAD_ID))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_init_decode_layout():
    cfg = _config()
    model = pair(cfg)

    def start(params):
        encoded = model.apply(params, SRC, MASK, train=False, method=model.encode)
        return model.apply(params, encoded, 7, method=model.init_decode)

    memory, cache = jax.eval_shape(start, _params(cfg))
    decoder = cfg.decoder
    layers, heads, head = decoder.num_layers, decoder.num_heads, decoder.head_size
    assert len(memory["keys"]) == len(memory["values"]) == layers
    for keys, values in zip(memory["keys"], memory["values"], strict=True):
        assert keys.shape == values.shape == (2, heads, head, 6)
    # Steps read only the cross-attention keys/values and the mask, not the encoder outputs.
    assert set(memory) == {"mask", "keys", "values"}
    assert memory["mask"].shape == (2, 6) and memory["mask"].dtype == jnp.bool_
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(memory))  # batch first, no beam
    assert len(cache["layers"]) == layers
    for buffers in cache["layers"]:
        assert buffers.keys.shape == (2, heads, head, 1, 7)
        assert buffers.values.shape == (2, heads, 1, 7, head)
        assert buffers.rows.shape == (2, 1, 7) and buffers.rows.dtype == jnp.int32
    assert cache["index"].shape == (2, 1) and cache["index"].dtype == jnp.int32


@pytest.mark.parametrize("position", ["learned", "t5_relative"])
def test_source_padding_does_not_change_logits(position):
    cfg = _config(position=position)
    params = _params(cfg)
    padded = jnp.pad(SRC, ((0, 0), (0, 3)), constant_values=PAD_ID)
    np.testing.assert_allclose(_logits(cfg, params, padded), _logits(cfg, params), atol=TOL)


@pytest.mark.parametrize("position", ["sinusoidal", "rope", "t5_relative"])
def test_decoder_is_causal(position):
    cfg = _config(position=position)
    params = _params(cfg)
    changed = TGT.at[:, 3].set(17)
    base, other = _logits(cfg, params), _logits(cfg, params, tgt=changed)
    np.testing.assert_allclose(base[:, :3], other[:, :3], atol=TOL)
    assert float(jnp.abs(base[:, 3:] - other[:, 3:]).max()) > 1e-3


@pytest.mark.parametrize("position", ["sinusoidal", "learned"])
def test_too_long_for_position_table(position):
    cfg = _config(position=position, max_position=5)
    model = pair(cfg)
    with pytest.raises(ValueError, match="max_position=5"):
        _shapes(cfg)
    encoded = {"outputs": jnp.zeros((2, 4, 32)), "mask": jnp.ones((2, 4), bool)}
    init = functools.partial(model.init, inputs_mask=MASK[:, :4], train=False)
    params = jax.eval_shape(init, jax.random.key(0), SRC[:, :4], TGT[:, :4])
    with pytest.raises(ValueError, match="max_length"):
        jax.eval_shape(lambda: model.apply(params, encoded, 6, method=model.init_decode))


def test_rope_and_relative_have_no_length_limit():
    for position in ("rope", "t5_relative"):
        cfg = _config(position=position, max_position=3)
        shapes = _shapes(cfg)
        assert "positions" not in shapes["params"]["encoder"]


# ---------------------------------------------------------------------------------------------
# Step-by-step decoding


def _full_and_stepped(model: Seq2Seq, params):
    """Logits of ``decode`` on both hypotheses, and of stepping them with beams 1 and 2."""
    encoded = model.apply(params, SRC, MASK, train=False, method=model.encode)
    tiled = jax.tree.map(lambda x: jnp.repeat(x, 2, axis=0), encoded)
    full = model.apply(params, tiled, HYPS.reshape(4, 5), train=False, method=model.decode)
    memory, cache = model.apply(params, encoded, HYPS.shape[-1], method=model.init_decode)

    def step(cache, ids):
        logits, cache = model.apply(params, memory, ids, cache, method=model.decode_step)
        return cache, logits

    stepped = {}
    for beam in (1, 2):
        beam_cache = hypotheses.tile_beams(cache, beam)
        _, logits = jax.lax.scan(step, beam_cache, jnp.moveaxis(HYPS[:, :beam], 2, 0))
        stepped[beam] = jnp.moveaxis(logits, 0, 2)  # [batch, beam, tgt_len, vocab]
    return full.reshape(2, 2, 5, VOCAB), stepped


def test_for_decoding_unrolls_scanned_layers_with_the_same_logits():
    cfg = _config(scan_layers=True)
    params = _params(cfg)
    model = pair(cfg)
    twin, twin_params = model.for_decoding(params["params"])
    assert not twin.config.decoder.scan_layers and "layers_0" in twin_params["decoder"]
    # Only the decoder steps: the encoder (run once per batch) keeps its scanned layout.
    assert (
        twin.config.encoder == cfg.encoder and twin_params["encoder"] is params["params"]["encoder"]
    )
    full, stepped = jit(functools.partial(_full_and_stepped, twin))({"params": twin_params})
    np.testing.assert_allclose(stepped[2], full, atol=TOL)
    _, scanned_stepped = jit(functools.partial(_full_and_stepped, model))(params)
    np.testing.assert_allclose(stepped[2], scanned_stepped[2], atol=TOL)
    assert twin.for_decoding(twin_params)[1] is twin_params


def _cached_cases():
    """Every position x norm x layout; a pairwise-covering half runs by default, the rest slow.

    Each case compiles its own program (~2-4 s on a shared CPU), so the default suite keeps the
    8 cases in which every pair of settings (position/norm, position/layout, norm/layout)
    appears; ``-m slow`` runs the other 8.
    """
    for i, position in enumerate(POSITION_NAMES):
        for pre_norm, scan_layers in itertools.product([True, False], repeat=2):
            covering = (pre_norm == scan_layers) == (i % 2 == 0)
            marks = () if covering else (pytest.mark.slow,)
            yield pytest.param(position, pre_norm, scan_layers, marks=marks)


@pytest.mark.parametrize("position, pre_norm, scan_layers", list(_cached_cases()))
def test_cached_decoding_matches_full_decode(position, pre_norm, scan_layers):
    cfg = _config(position=position, pre_norm=pre_norm, scan_layers=scan_layers)
    full, stepped = jit(functools.partial(_full_and_stepped, pair(cfg)))(_params(cfg))
    np.testing.assert_allclose(stepped[1], full[:, :1], atol=TOL)  # beam 1
    np.testing.assert_allclose(stepped[2], full, atol=TOL)  # beam 2: per-hypothesis caches


def test_decode_step_compiles_once():
    cfg = _config(position="rope")
    model = pair(cfg)
    params = _params(cfg)

    @jit
    def start(params):
        encoded = model.apply(params, SRC, MASK, train=False, method=model.encode)
        return model.apply(params, encoded, 4, method=model.init_decode)

    memory, cache = start(params)

    @jit
    @chex.assert_max_traces(n=1)  # the position lives in the cache, not in Python
    def step(memory, ids, cache):
        return model.apply(params, memory, ids, cache, method=model.decode_step)

    for t in range(4):
        _, cache = step(memory, TGT[:, t : t + 1], cache)
    np.testing.assert_array_equal(cache["index"], jnp.full((2, 1), 4))


# ---------------------------------------------------------------------------------------------
# Layouts, dtypes, parameters


def test_scanned_equals_unrolled_after_conversion():
    cfg = _config(position="t5_relative")
    scanned = _params(cfg)
    unrolled = unstack_layer_params(scanned)
    unrolled_cfg = replace_parts(cfg, scan_layers=False)
    expected_tree = _shapes(unrolled_cfg)
    assert jax.tree.structure(nn.meta.unbox(expected_tree)) == jax.tree.structure(unrolled)
    stack = ["embedding", "final_norm", "layers_0", "layers_1", "relative_bias"]
    assert sorted(unrolled["params"]["encoder"]) == sorted(stack)
    assert sorted(unrolled["params"]["decoder"]) == sorted([*stack, "cross_key", "cross_value"])
    np.testing.assert_allclose(_logits(unrolled_cfg, unrolled), _logits(cfg, scanned), atol=TOL)
    restacked = stack_layer_params(unrolled)
    jax.tree.map(np.testing.assert_array_equal, restacked, scanned)


def test_bfloat16_compute_with_float32_params():
    cfg = _config(dtype="bfloat16")
    shapes = _shapes(cfg)
    assert {leaf.dtype for leaf in jax.tree.leaves(nn.meta.unbox(shapes))} == {
        jnp.dtype(jnp.float32)
    }
    params = _params(_config())
    low, high = _logits(cfg, params), _logits(_config(), params)
    assert low.dtype == jnp.float32
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2% per op); through ~10
    # matmuls/norms the logits (|logit| ~ 3) move by a few percent of their scale at most.
    scale = float(jnp.abs(high).max())
    assert float(jnp.abs(low - high).max()) < 0.03 * scale
    assert float(jnp.abs(low - high).max()) > 0  # the computation really ran in bfloat16


def _count(cfg) -> int:
    shapes = _shapes(cfg)
    return sum(leaf.size for leaf in jax.tree.leaves(nn.meta.unbox(shapes)))


def test_embedding_sharing_and_tying_param_counts():
    base = _count(_config())
    d = 32
    assert _count(_config(share_embeddings=True)) == base - VOCAB * d
    assert _count(_config(tie_output=False)) == base + d * VOCAB + VOCAB  # kernel + bias
    assert _count(_config(final_logits_bias=True)) == base + VOCAB


def test_final_logits_bias_is_added():
    cfg = _config(final_logits_bias=True)
    params = jax.tree.map(lambda x: x, _params(_config()))
    params["params"]["decoder"]["final_logits_bias"] = jnp.arange(VOCAB, dtype=jnp.float32)
    difference = _logits(cfg, params) - _logits(_config(), params)
    np.testing.assert_allclose(
        difference, jnp.broadcast_to(jnp.arange(VOCAB), (2, 5, VOCAB)), atol=TOL
    )


@pytest.mark.parametrize("scan_layers", [True, False])
def test_params_carry_logical_axis_names(scan_layers):
    cfg = _config(position="t5_relative", tie_output=False, scan_layers=scan_layers)
    boxed = _shapes(cfg)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        names = leaf.names
        assert len(names) == leaf.value.ndim and set(names) <= LOGICAL_NAMES
        named = [n for n in names if n is not None]
        assert len(named) == len(set(named)), names
    query = boxed["params"]["decoder"]["layers" if scan_layers else "layers_0"]["self_attention"]
    expected = ("embed", "heads", "kv")
    assert query["query"]["kernel"].names == (("layers", *expected) if scan_layers else expected)


# ---------------------------------------------------------------------------------------------
# Training behaviour


def test_dropout_only_in_train_mode():
    cfg = _config(dropout=0.3)
    params = _params(cfg)
    model = pair(cfg)
    jitted = jit(model.apply, static_argnames="train")
    rngs = lambda seed: {"dropout": jax.random.key(seed)}
    apply = lambda train, seed: jitted(
        params, SRC, TGT, inputs_mask=MASK, train=train, rngs=rngs(seed)
    )
    eval_a = apply(False, 1)
    np.testing.assert_array_equal(eval_a, apply(False, 2))
    train_a = apply(True, 1)
    assert float(jnp.abs(train_a - apply(True, 2)).max()) > 1e-3
    assert float(jnp.abs(train_a - eval_a).max()) > 1e-3


def _loss(cfg, params, src, targets):
    decoder_inputs = jnp.concatenate([jnp.full_like(targets[:, :1], BOS_ID), targets[:, :-1]], 1)
    logits = pair(cfg).apply(params, src, decoder_inputs, inputs_mask=source_mask(src), train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    mask = targets != PAD_ID
    return jnp.sum(losses * mask) / jnp.sum(mask)


@pytest.mark.parametrize(
    "policy",
    ["dots_with_no_batch_dims", pytest.param("full", marks=pytest.mark.slow)],
)
def test_remat_keeps_gradients(policy):
    cfg = _config()
    params = _params(cfg)
    grad = lambda c: jit(jax.grad(functools.partial(_loss, c)))(params, SRC, TGT)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, atol=TOL),
        grad(replace_parts(cfg, remat_policy=policy)),
        grad(cfg),
    )


def test_overfits_reversal():
    cfg = _config()
    src = jnp.array([[5, 6, 7, 8], [9, 10, 11, 12], [13, 6, 9, 4], [7, 14, 15, 16]])
    targets = jnp.concatenate([src[:, ::-1], jnp.full((4, 1), EOS_ID)], axis=1)
    loss_fn = functools.partial(_loss, cfg, src=src, targets=targets)
    optimizer = optax.adam(3e-3)

    @jit  # init and all 200 steps in one program: one compilation
    def train(rng):
        mask = source_mask(src)
        params = nn.meta.unbox(pair(cfg).init(rng, src, targets, inputs_mask=mask, train=False))

        def step(state, _):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=200)
        return losses[0], loss_fn(params)

    first, final = train(jax.random.key(0))
    assert float(final) < 0.1 * float(first), (float(first), float(final))
