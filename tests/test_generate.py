"""Decoding real models through the generic glue: one decoder loop for every family."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.config import apply_overrides, base_config
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding.generate import DecodeConfig, decoder, decoding_model, generate, jit_generate
from s2s_jax.models.registry import build_model

VOCAB = 12
FAMILIES = {
    "rnn_luong": {"model.family": "rnn", "model.attention": "luong_general",
                  "model.hidden_size": "16", "model.embed_dim": "8"},
    "rnn_bahdanau_bi_gru": {"model.family": "rnn", "model.attention": "bahdanau",
                            "model.cell": "gru", "model.bidirectional": "true",
                            "model.hidden_size": "16", "model.embed_dim": "8"},
    "transformer": {"model.family": "transformer", "model.d_model": "16", "model.num_heads": "2",
                    "model.mlp_dim": "32", "model.dropout": "0.0"},
}  # fmt: skip
SOURCES = jnp.array([[5, 6, 7, 8, 9, EOS_ID], [4, 9, 10, EOS_ID, PAD_ID, PAD_ID]], jnp.int32)


def make(family: str):
    config = apply_overrides(base_config(), list(FAMILIES[family].items()))
    model, _ = build_model(config.model, VOCAB, VOCAB)
    variables = model.init(jax.random.key(0), SOURCES, SOURCES, train=False)
    # Random init gives near-uniform logits; scale the output layer up so decoding decisions are
    # clear-cut and ties (which could legitimately break differently) do not occur.
    params = jax.tree.map(lambda x: x * 3.0, nn.meta.unbox(variables)["params"])
    return model, params


def uncached_greedy(model, params, sources, steps):
    """Greedy decoding by re-running the full teacher-forced decoder on the growing prefix."""
    encoded = model.apply({"params": params}, sources, train=False, method=model.encode)
    prefix = jnp.full((sources.shape[0], 1), BOS_ID, jnp.int32)
    for _ in range(steps):
        logits = model.apply({"params": params}, encoded, prefix, train=False, method=model.decode)
        prefix = jnp.concatenate([prefix, jnp.argmax(logits[:, -1], -1)[:, None]], axis=1)
    return np.asarray(prefix[:, 1:])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_greedy_equals_uncached(family):
    model, params = make(family)
    cfg = DecodeConfig(method="greedy", max_length_ratio=1.0, max_length_offset=3)
    result = generate(params, SOURCES, model=model, cfg=cfg)
    expected = uncached_greedy(model, params, SOURCES, cfg.max_length(SOURCES.shape[1]))
    got = np.asarray(result.sequences[:, 0])
    caps = np.sum(np.asarray(SOURCES) != PAD_ID, axis=1) + 3  # ratio 1, offset 3
    compared = 0
    for row in range(SOURCES.shape[0]):
        # Up to and including EOS; a token at the row's cap is a forced EOS, not the argmax.
        n = min(int(result.lengths[row, 0]), int(caps[row]) - 1)
        np.testing.assert_array_equal(got[row, :n], expected[row, :n])
        compared += n
    assert compared >= 4  # the comparison covers several decoding steps


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_beam_one_equals_greedy_and_wide_beam_scores_no_worse(family):
    model, params = make(family)
    greedy = generate(params, SOURCES, model=model, cfg=DecodeConfig(method="greedy"))
    beam1 = generate(params, SOURCES, model=model,
                     cfg=DecodeConfig(method="beam", beam_size=1, alpha=0.0))  # fmt: skip
    np.testing.assert_array_equal(beam1.sequences, greedy.sequences)
    beam4 = generate(params, SOURCES, model=model,
                     cfg=DecodeConfig(method="beam", beam_size=4, alpha=0.0, nbest=4))  # fmt: skip
    # With alpha 0 scores are log-probs: the best of a wider beam is never below greedy's.
    assert np.all(np.asarray(beam4.scores[:, 0]) >= np.asarray(greedy.scores[:, 0]) - 1e-5)
    assert np.all(np.diff(np.asarray(beam4.scores), axis=1) <= 1e-6)  # n-best sorted


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_no_recompilation_across_calls(method):
    model, params = make("rnn_luong")
    fn = jit_generate(model, DecodeConfig(method=method, beam_size=3))
    first = fn(params, SOURCES)
    second = fn(params, SOURCES[::-1])
    assert fn._cache_size() == 1  # same shapes: one compiled executable, reused
    np.testing.assert_array_equal(first.sequences[::-1], second.sequences)
    fn(params, jnp.pad(SOURCES, ((0, 0), (0, 2))))
    assert fn._cache_size() == 2  # a new source bucket compiles once more, as expected


def test_decode_config_validation():
    with pytest.raises(ValueError, match="nbest"):
        DecodeConfig(method="greedy", nbest=2)
    with pytest.raises(ValueError, match="greedy, beam"):
        DecodeConfig(method="topk")
    with pytest.raises(ValueError, match="greedy, beam, sample"):
        DecodeConfig(method="nucleus")
    assert DecodeConfig(max_length_ratio=1.5, max_length_offset=5).max_length(10) == 20


def test_sampling_top_k_one_equals_greedy_and_seed_repeats():
    model, params = make("transformer")
    greedy = generate(params, SOURCES, model=model, cfg=DecodeConfig(method="greedy"))
    top1 = generate(params, SOURCES, model=model, cfg=DecodeConfig(method="sample", top_k=1))
    np.testing.assert_array_equal(top1.sequences, greedy.sequences)
    hot = DecodeConfig(method="sample", temperature=2.0, seed=3)
    a = generate(params, SOURCES, model=model, cfg=hot)
    b = generate(params, SOURCES, model=model, cfg=hot)
    np.testing.assert_array_equal(a.sequences, b.sequences)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_min_length_and_no_repeat_ngram_reach_every_method(method):
    model, params = make("transformer")
    base = dict(method=method, beam_size=2, max_length_ratio=0.0, max_length_offset=8)
    free = generate(params, SOURCES, model=model, cfg=DecodeConfig(**base))
    rules = DecodeConfig(**base, min_length=6, no_repeat_ngram_size=1)
    constrained = generate(params, SOURCES, model=model, cfg=rules)
    lengths = np.asarray(constrained.lengths[:, 0])
    assert np.all(lengths >= 6)  # EOS (counted in the length) is blocked before 6 tokens
    for row, n in zip(np.asarray(constrained.sequences[:, 0]), lengths, strict=True):
        body = row[: n - 1] if row[n - 1] == EOS_ID else row[:n]
        assert len(set(body.tolist())) == len(body)  # no unigram repeats
    # The constraints changed something: unconstrained decoding ends early or repeats a token.
    assert not np.array_equal(np.asarray(free.sequences), np.asarray(constrained.sequences))


def test_decode_constraints_validation():
    with pytest.raises(ValueError, match="min_length and no_repeat_ngram_size"):
        DecodeConfig(min_length=-1)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_decoder_prepares_the_decoding_layout_once(method):
    model, params = make("transformer")
    assert model.config.scan_layers  # the case where for_decoding copies params
    cfg = DecodeConfig(method=method, beam_size=3)
    decode = decoder(model, params, cfg)
    want = jit_generate(model, cfg)(params, SOURCES)
    got = decode(SOURCES)
    np.testing.assert_array_equal(got.sequences, want.sequences)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    per_call = jit_generate(model, cfg).lower(params, SOURCES).compile().as_text()
    prepared = decode.func.lower(*decode.args, SOURCES).compile().as_text()
    assert "for_decoding" in per_call and "for_decoding" not in prepared


@pytest.mark.parametrize("family", ["transformer", "rnn_luong"])
def test_decoding_model_is_the_for_decoding_twin_found_from_shapes(family):
    model, params = make(family)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    twin = decoding_model(model, abstract)
    assert twin == model.for_decoding(params)[0]
    if family == "transformer":  # scanned: the unrolled twin, whose own twin is itself
        assert twin != model and not twin.config.scan_layers
        assert decoding_model(twin, model.for_decoding(params)[1]) is twin
    else:
        assert twin is model
