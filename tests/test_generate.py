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
FEATURES = 5
SMALL_RNN = {"hidden_size": "16", "embed_dim": "8"}
SMALL_TRANSFORMER = {"d_model": "16", "num_heads": "2", "mlp_dim": "32", "dropout": "0.0"}


def _pair(encoder: str, decoder: str, enc=None, dec=None, **model) -> dict[str, str]:
    sizes = {"rnn": SMALL_RNN, "transformer": SMALL_TRANSFORMER}
    out = {"model.encoder.type": encoder, "model.decoder.type": decoder, **model}
    for side, kind, extra in (("encoder", encoder, enc or {}), ("decoder", decoder, dec or {})):
        out |= {f"model.{side}.{k}": v for k, v in (sizes[kind] | extra).items()}
    return out


# Every registered encoder with every decoder, token and float-frame sources.
PAIRS = {
    "rnn_luong": _pair("rnn", "rnn", dec={"attention": "luong_general"}),
    "rnn_bahdanau_bi_gru": _pair(
        "rnn", "rnn", enc={"cell": "gru", "bidirectional": "true"},
        dec={"cell": "gru", "attention": "bahdanau"},
    ),
    "transformer": _pair("transformer", "transformer"),
    "transformer_to_rnn_luong": _pair("transformer", "rnn", dec={"attention": "luong_general"}),
    "transformer_to_rnn_context": _pair("transformer", "rnn", dec={"attention": "none"}),
    "rnn_to_transformer": _pair("rnn", "transformer", enc={"bidirectional": "true"}),
    "features_rnn": _pair("rnn", "rnn", enc={"input": "features"}),
    "features_transformer": _pair("transformer", "transformer", enc={"input": "features"}),
}  # fmt: skip
TOKENS = jnp.array([[5, 6, 7, 8, 9, EOS_ID], [4, 9, 10, EOS_ID, PAD_ID, PAD_ID]], jnp.int32)
MASK = TOKENS != PAD_ID
FRAMES = jax.random.normal(jax.random.key(1), (2, 6, FEATURES)) * MASK[..., None]
FAMILIES = PAIRS  # the decoding tests below run on every pair


def make(name: str):
    """(model, params, sources, mask) of a pair, with sources of its input kind."""
    config = apply_overrides(base_config(), list(PAIRS[name].items()))
    frames = config.model.encoder.input == "features"
    src_vocab, features = (0, FEATURES) if frames else (VOCAB, 0)
    model, _ = build_model(config.model, src_vocab, VOCAB, features)
    sources = FRAMES if frames else TOKENS
    variables = model.init(jax.random.key(0), sources, TOKENS, inputs_mask=MASK, train=False)
    # Random init gives near-uniform logits; scale the output layer up so decoding decisions are
    # clear-cut and ties (which could legitimately break differently) do not occur.
    params = jax.tree.map(lambda x: x * 3.0, nn.meta.unbox(variables)["params"])
    return model, params, sources, MASK


def uncached_greedy(model, params, sources, mask, steps):
    """Greedy decoding by re-running the full teacher-forced decoder on the growing prefix.

    The prefix has its final length from the start, PAD after the tokens chosen so far: one
    compiled decode serves every step, and a decoder that let a position see later ones would
    read those PADs and disagree with the cached steps.
    """
    variables = {"params": params}
    encoded = model.apply(variables, sources, mask, train=False, method=model.encode)
    decode = jax.jit(
        lambda prefix: model.apply(variables, encoded, prefix, train=False, method=model.decode)
    )
    prefix = np.full((sources.shape[0], steps + 1), PAD_ID, np.int32)
    prefix[:, 0] = BOS_ID
    for t in range(steps):
        logits = decode(jnp.asarray(prefix[:, :-1]))
        prefix[:, t + 1] = np.asarray(jnp.argmax(logits[:, t], -1))
    return prefix[:, 1:]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_greedy_equals_uncached(family):
    model, params, sources, mask = make(family)
    cfg = DecodeConfig(method="greedy", max_length_ratio=1.0, max_length_offset=3)
    result = generate(params, sources, mask, model=model, cfg=cfg)
    expected = uncached_greedy(model, params, sources, mask, cfg.max_length(mask.shape[1]))
    got = np.asarray(result.sequences[:, 0])
    caps = np.sum(np.asarray(mask), axis=1) + 3  # ratio 1, offset 3
    compared = 0
    for row in range(mask.shape[0]):
        # Up to and including EOS; a token at the row's cap is a forced EOS, not the argmax.
        n = min(int(result.lengths[row, 0]), int(caps[row]) - 1)
        np.testing.assert_array_equal(got[row, :n], expected[row, :n])
        compared += n
    assert compared >= 4  # the comparison covers several decoding steps


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_beam_one_equals_greedy_and_beam_scores_are_the_models(family):
    model, params, sources, mask = make(family)
    greedy = generate(params, sources, mask, model=model, cfg=DecodeConfig(method="greedy"))
    beam1 = generate(params, sources, mask, model=model,
                     cfg=DecodeConfig(method="beam", beam_size=1, alpha=0.0))  # fmt: skip
    np.testing.assert_array_equal(beam1.sequences, greedy.sequences)
    beam4 = generate(params, sources, mask, model=model,
                     cfg=DecodeConfig(method="beam", beam_size=4, alpha=0.0, nbest=4))  # fmt: skip
    assert np.all(np.diff(np.asarray(beam4.scores), axis=1) <= 1e-6)  # n-best sorted
    # With alpha 0 a score is the hypothesis' log-probability: teacher forcing it through the
    # model gives the same sum, a forced EOS at the length cap included. (Beam 4 need not beat
    # greedy: greedy's prefix can be pruned, so that is not asserted.)
    encoded = model.apply({"params": params}, sources, mask, train=False, method=model.encode)
    checked = 0
    for rank in range(4):
        seqs, lengths = np.asarray(beam4.sequences[:, rank]), np.asarray(beam4.lengths[:, rank])
        inputs = np.concatenate([np.full((len(seqs), 1), BOS_ID), seqs[:, :-1]], axis=1)
        logits = model.apply({"params": params}, encoded, jnp.asarray(inputs), train=False,
                             method=model.decode)  # fmt: skip
        logp = np.asarray(jax.nn.log_softmax(logits))
        for row, n in enumerate(lengths):
            total = sum(logp[row, t, seqs[row, t]] for t in range(n))
            np.testing.assert_allclose(total, beam4.scores[row, rank], rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked == 8


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_no_recompilation_across_calls(method):
    model, params, sources, mask = make("rnn_luong")
    fn = jit_generate(model, DecodeConfig(method=method, beam_size=3))
    first = fn(params, sources, mask)
    second = fn(params, sources[::-1], mask[::-1])
    assert fn._cache_size() == 1  # same shapes: one compiled executable, reused
    np.testing.assert_array_equal(first.sequences[::-1], second.sequences)
    fn(params, jnp.pad(sources, ((0, 0), (0, 2))), jnp.pad(mask, ((0, 0), (0, 2))))
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
    model, params, sources, mask = make("transformer")
    greedy = generate(params, sources, mask, model=model, cfg=DecodeConfig(method="greedy"))
    top1 = generate(params, sources, mask, model=model, cfg=DecodeConfig(method="sample", top_k=1))
    np.testing.assert_array_equal(top1.sequences, greedy.sequences)
    hot = DecodeConfig(method="sample", temperature=2.0, seed=3)
    a = generate(params, sources, mask, model=model, cfg=hot)
    b = generate(params, sources, mask, model=model, cfg=hot)
    np.testing.assert_array_equal(a.sequences, b.sequences)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_min_length_and_no_repeat_ngram_reach_every_method(method):
    model, params, sources, mask = make("transformer")
    base = dict(method=method, beam_size=2, max_length_ratio=0.0, max_length_offset=8)
    free = generate(params, sources, mask, model=model, cfg=DecodeConfig(**base))
    rules = DecodeConfig(**base, min_length=6, no_repeat_ngram_size=1)
    constrained = generate(params, sources, mask, model=model, cfg=rules)
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
    model, params, sources, mask = make("transformer")
    assert model.config.decoder.scan_layers  # the case where for_decoding copies params
    cfg = DecodeConfig(method=method, beam_size=3)
    decode = decoder(model, params, cfg)
    want = jit_generate(model, cfg)(params, sources, mask)
    got = decode(sources, mask)
    np.testing.assert_array_equal(got.sequences, want.sequences)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    per_call = jit_generate(model, cfg).lower(params, sources, mask).compile().as_text()
    prepared = decode.func.lower(*decode.args, sources, mask).compile().as_text()
    assert "for_decoding" in per_call and "for_decoding" not in prepared


@pytest.mark.parametrize("family", ["transformer", "rnn_luong"])
def test_decoding_model_is_the_for_decoding_twin_found_from_shapes(family):
    model, params, _, _ = make(family)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    twin = decoding_model(model, abstract)
    assert twin == model.for_decoding(params)[0]
    if family == "transformer":  # scanned: the unrolled twin, whose own twin is itself
        assert twin != model and not twin.config.decoder.scan_layers
        assert decoding_model(twin, model.for_decoding(params)[1]) is twin
    else:
        assert twin is model


def test_the_decode_budget_counts_the_mask_not_token_ids():
    """Rows whose mask says 2 real positions stop at ratio * 2 + offset, whatever the ids."""
    model, params, sources, _ = make("rnn_luong")
    short = jnp.zeros_like(MASK).at[:, :2].set(True)
    cfg = DecodeConfig(method="greedy", max_length_ratio=1.0, max_length_offset=1)
    lengths = np.asarray(generate(params, sources, short, model=model, cfg=cfg).lengths[:, 0])
    assert np.all(lengths <= 3)  # 1.0 * 2 + 1
    full = generate(params, sources, MASK, model=model, cfg=cfg)
    assert np.asarray(full.lengths[:, 0]).max() > 3  # the same ids with their real mask go on


def test_every_registered_pair_meets_the_protocol():
    from s2s_jax.models.registry import DECODERS, ENCODERS
    from s2s_jax.models.types import Seq2SeqModel

    for encoder in ENCODERS:
        for decoder_type in DECODERS:
            config = apply_overrides(
                base_config(),
                [("model.encoder.type", encoder), ("model.decoder.type", decoder_type)],
            )
            model, _ = build_model(config.model, VOCAB, VOCAB)
            assert isinstance(model, Seq2SeqModel), (encoder, decoder_type)
            covered = {(p["model.encoder.type"], p["model.decoder.type"]) for p in PAIRS.values()}
            assert (encoder, decoder_type) in covered  # and the tests above decode it


@pytest.mark.parametrize("family", ["rnn_luong", "transformer"])
def test_beam_one_scores_at_least_greedy_under_the_length_penalty(family):
    # With alpha > 0 beam 1 is not greedy: when EOS is the best token it keeps that finished
    # hypothesis *and* continues with the best other token, returning a longer hypothesis when
    # its length-normalised score is higher. What always holds: greedy's own hypothesis is one
    # beam 1 considered, so beam 1's normalised score is never below greedy's.
    from s2s_jax.decoding.beam_search import length_penalty

    model, params, sources, mask = make(family)
    greedy = generate(params, sources, mask, model=model, cfg=DecodeConfig(method="greedy"))
    beam1 = generate(params, sources, mask, model=model,
                     cfg=DecodeConfig(method="beam", beam_size=1, alpha=0.6))  # fmt: skip
    greedy_normalised = greedy.scores[:, 0] / length_penalty(greedy.lengths[:, 0], 0.6)
    assert np.all(np.asarray(beam1.scores[:, 0]) >= np.asarray(greedy_normalised) - 1e-5)
