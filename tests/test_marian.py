"""Tests for s2s_jax.models.marian: bridged weights reproduce Hugging Face Marian exactly."""

import dataclasses
import functools
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from s2s_jax import decoding
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.decoding.generate import DecodeConfig, jit_generate
from s2s_jax.models import marian, marian_config, registry

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=50, d_model=16, layers=2, heads=2, ffn=32, max_len=64)
# Right-padded, EOS-terminated sources of different lengths (as a Marian tokenizer makes them).
SOURCES = np.array(
    [
        [5, 17, 33, 8, 41, 12, EOS_ID],
        [22, 9, 30, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
        [48, 3, 19, 27, 6, EOS_ID, PAD_ID],
        [11, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
        [36, 14, 25, 40, 7, 29, EOS_ID],
        [4, 44, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
    ]
)
TARGETS = np.array(  # decoder inputs, BOS first
    [
        [BOS_ID, 20, 21, 22, 23, 24],
        [BOS_ID, 31, 5, EOS_ID, PAD_ID, PAD_ID],
        [BOS_ID, 9, 9, 47, 13, 2],
        [BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
        [BOS_ID, 16, 26, 36, 46, 6],
        [BOS_ID, 45, 44, 43, EOS_ID, PAD_ID],
    ]
)
SOURCES_MASK = SOURCES != PAD_ID
STEPS = 10  # tokens generated, EOS included, on both sides
# Added to EOS's logit (final_logits_bias, so on both sides) so that the random models end
# some outputs early and others at the cap; beam search favours short outputs more than greedy.
GREEDY_EOS_BOOST = 1.3
BEAM_EOS_BOOST = 0.5
# float32 on CPU: torch and XLA sum in different orders through 2 + 2 post-LN layers, giving
# differences of ~1e-6 on logits of magnitude ~5; 1e-5 keeps 10x headroom. Mapping errors move
# logits by >= 0.2 (one head-misordered bias, one dropped bias, swapped cross-attention layers);
# even LayerNorm epsilon 1e-6 instead of 1e-5 moves them by 1.4e-5.
LOGITS_ATOL = 1e-5


def _randomise(model, eos_boost: float) -> None:
    """Replaces HF's init (std 0.02: near-uniform logits, zero biases, unit norms) with weights
    that give well-separated logits and make every bias and norm parameter count."""
    generator = torch.Generator().manual_seed(0)
    normal = lambda p: torch.randn(p.shape, generator=generator)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # fixed sinusoids, not weights
                continue
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * normal(p))
            elif p.ndim == 1:
                p.copy_(0.2 * normal(p))
            else:
                p.copy_(normal(p) * p.shape[-1] ** -0.5)
        bias = 0.2 * normal(model.final_logits_bias)
        bias[0, EOS_ID] += eos_boost
        model.final_logits_bias.copy_(bias)


@functools.cache
def _hf_model(variant: str, eos_boost: float = 0.0):
    """A seeded, randomised MarianMTModel in eval mode, EOS logit raised by ``eos_boost``.

    "shared": Opus-MT style (shared, tied, scaled embeddings, relu).
    "separate": separate source/target vocabularies, untied head, unscaled, swish.
    """
    activation = "swish" if variant == "separate" else "relu"
    config = marian_config.marian_test_config(**SIZES, activation=activation)
    if variant == "separate":
        config.share_encoder_decoder_embeddings = False
        config.tie_word_embeddings = False
        config.decoder_vocab_size = 48  # TARGETS use ids < 48
        config.scale_embedding = False
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    _randomise(model, eos_boost)
    return model


def _hf_logits(model, sources, targets) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(sources),
            attention_mask=torch.tensor(sources != PAD_ID),
            decoder_input_ids=torch.tensor(targets),
        )
    return out.logits.numpy()


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_has_marian_conventions():
    config = marian.marian_to_config(_hf_model("shared").config, scan_layers=False)
    assert (config.encoder_type, config.decoder_type) == ("transformer", "transformer")
    assert config.share_embeddings is True
    stack = dict(
        vocab_size=50,
        d_model=16,
        num_heads=2,
        mlp_dim=32,
        num_layers=2,
        activation="relu",
        norm_epsilon=1e-5,
        pre_norm=False,
        position="sinusoidal",
        max_position=64,
        scale_embeddings=True,
        scan_layers=False,
    )
    assert {k: getattr(config.encoder, k) for k in stack} == stack
    assert config.encoder.input == "tokens"
    decoder = dict(stack, tie_output=True, final_logits_bias=True)
    assert {k: getattr(config.decoder, k) for k in decoder} == decoder


@pytest.mark.parametrize("variant", ["shared", "separate"])
@pytest.mark.parametrize("scan_layers", [True, False])
def test_params_have_the_init_tree(variant, scan_layers):
    """Every parameter the model creates is filled, with its shape and dtype, and nothing else."""
    config, params = marian.from_marian(_hf_model(variant), scan_layers=scan_layers)
    init = functools.partial(registry.pair(config).init, inputs_mask=SOURCES_MASK, train=False)
    boxed = jax.eval_shape(init, jax.random.key(0), SOURCES, TARGETS)["params"]
    expected = jax.tree.map(lambda x: (x.shape, x.dtype), nn.meta.unbox(boxed))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == expected


# ---------------------------------------------------------------------------------------------
# Teacher forcing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, scan_layers", [("shared", True), ("shared", False), ("separate", True)]
)
def test_teacher_forced_logits_match(variant, scan_layers):
    model = _hf_model(variant)
    config, params = marian.from_marian(model, scan_layers=scan_layers)
    logits = registry.pair(config).apply(
        {"params": params}, SOURCES, TARGETS, inputs_mask=SOURCES_MASK, train=False
    )
    expected = _hf_logits(model, SOURCES, TARGETS)
    assert logits.shape == expected.shape
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=LOGITS_ATOL)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _ForceEosAtLastStep(transformers.LogitsProcessor):
    """s2s_jax's EOS at the length cap: EOS keeps its model log-prob. (HF's
    ForcedEOSTokenLogitsProcessor scores the forced EOS 0, which reorders final beams.)"""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.max_length - 1:
            return scores
        keep = torch.arange(scores.shape[-1]) == EOS_ID
        return torch.where(keep, scores, torch.full_like(scores, -float("inf")))


@functools.cache
def _bridged(eos_boost: float):
    config, params = marian.from_marian(_hf_model("shared", eos_boost))
    return registry.pair(config), params


def _s2s_search(eos_boost: float, search, **options) -> decoding.DecodeResult:
    """``generate.generate`` with options ``DecodeConfig`` does not expose (min_length)."""
    model, params = _bridged(eos_boost)
    model, params = model.for_decoding(params)  # as generate.generate runs the decoder

    def run(params, sources, sources_mask):
        variables = {"params": params}
        encoded = model.apply(variables, sources, sources_mask, train=False, method=model.encode)
        memory, cache = model.apply(variables, encoded, STEPS, method=model.init_decode)

        def tokens_to_logits(ids, cache):
            return model.apply(variables, memory, ids, cache, method=model.decode_step)

        return search(tokens_to_logits, cache, max_length=STEPS, **options)

    return jax.jit(run)(params, SOURCES, SOURCES_MASK)


def _s2s_generate(eos_boost: float, **options) -> decoding.DecodeResult:
    # ratio 0: every row gets the same cap, STEPS, as HF's batch-wide max_new_tokens.
    cfg = DecodeConfig(max_length_ratio=0.0, max_length_offset=STEPS, **options)
    model, params = _bridged(eos_boost)
    return jit_generate(model, cfg)(params, SOURCES, SOURCES_MASK)


def _hf_generate(eos_boost: float, **options) -> tuple[np.ndarray, np.ndarray | None]:
    """HF ``generate`` on SOURCES, in s2s_jax's ``DecodeResult`` layout.

    Returns:
      tokens ``[batch, n, STEPS]`` after the decoder start, PAD past EOS (n is
      ``num_return_sequences``, best first), and beam search's scores ``[batch, n]`` (None
      for greedy).
    """
    model = _hf_model("shared", eos_boost)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(SOURCES),
            attention_mask=torch.tensor(SOURCES_MASK),
            max_new_tokens=STEPS,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **options,
        )
    sequences = out.sequences.numpy()
    assert np.all(sequences[:, 0] == BOS_ID)
    tokens = np.pad(sequences[:, 1:], ((0, 0), (0, STEPS + 1 - sequences.shape[1])))
    # HF beam search fills after EOS with EOS (its fill value skips a pad id of 0), greedy with
    # PAD; s2s_jax always with PAD.
    after_eos = np.cumsum(np.cumsum(tokens == EOS_ID, axis=1), axis=1) > 1
    tokens = np.where(after_eos, PAD_ID, tokens).reshape(len(SOURCES), -1, STEPS)
    scores = getattr(out, "sequences_scores", None)
    return tokens, None if scores is None else scores.numpy().reshape(len(SOURCES), -1)


def _lengths(tokens: np.ndarray) -> np.ndarray:
    """Tokens up to and including the first EOS, per row of ``[..., STEPS]``."""
    assert np.all(np.any(tokens == EOS_ID, axis=-1)), "every output ends with EOS"
    return np.argmax(tokens == EOS_ID, axis=-1) + 1


def _hf_beam_options(**options) -> dict:
    """HF beam search as s2s_jax runs it: 4 beams, all 4 returned, EOS forced at the cap at
    its model log-prob (instead of HF's ForcedEOSTokenLogitsProcessor)."""
    force_eos = _ForceEosAtLastStep(STEPS + 1)
    return dict(
        num_beams=4,
        num_return_sequences=4,
        forced_eos_token_id=None,
        logits_processor=transformers.LogitsProcessorList([force_eos]),
        **options,
    )


def test_greedy_matches_with_eos_allowed():
    result = _s2s_generate(GREEDY_EOS_BOOST, method="greedy")
    expected, _ = _hf_generate(GREEDY_EOS_BOOST, num_beams=1)
    np.testing.assert_array_equal(np.asarray(result.sequences), expected)
    lengths = _lengths(expected)
    assert lengths.min() < STEPS and len(set(lengths.flat)) > 1, lengths  # EOS chosen, not forced


def test_greedy_matches_with_eos_suppressed():
    result = _s2s_search(GREEDY_EOS_BOOST, decoding.greedy, min_length=STEPS - 1)
    expected, _ = _hf_generate(GREEDY_EOS_BOOST, num_beams=1, min_new_tokens=STEPS - 1)
    np.testing.assert_array_equal(np.asarray(result.sequences), expected)
    np.testing.assert_array_equal(_lengths(expected), STEPS)


def test_beam_matches_with_eos_allowed():
    """All 4 hypotheses and their scores. alpha 0 / length_penalty 0 rank by summed log-prob,
    and HF's early_stopping="never" then stops exactly as s2s_jax does: once no alive beam can
    beat the worst of the 4 kept finished ones."""
    cfg = dict(method="beam", beam_size=4, nbest=4, alpha=0.0)
    result = _s2s_generate(BEAM_EOS_BOOST, **cfg)
    options = _hf_beam_options(length_penalty=0.0, early_stopping="never")
    expected, scores = _hf_generate(BEAM_EOS_BOOST, **options)
    np.testing.assert_array_equal(np.asarray(result.sequences), expected)
    # Sums of <= STEPS float32 log-probs, each within ~1e-6 of HF's (see LOGITS_ATOL).
    np.testing.assert_allclose(np.asarray(result.scores), scores, rtol=0, atol=LOGITS_ATOL)
    lengths = _lengths(expected[:, 0])
    assert lengths.min() < STEPS and len(set(lengths)) > 1, lengths


def test_beam_matches_with_eos_suppressed():
    # Every hypothesis has STEPS tokens, so the GNMT penalty (alpha) and HF's len**penalty rank
    # them alike whatever their values.
    options = dict(beam_size=4, nbest=4, alpha=0.6, min_length=STEPS - 1)
    result = _s2s_search(BEAM_EOS_BOOST, decoding.beam_search, **options)
    hf_options = _hf_beam_options(min_new_tokens=STEPS - 1, length_penalty=1.0)
    expected, _ = _hf_generate(BEAM_EOS_BOOST, **hf_options)
    np.testing.assert_array_equal(np.asarray(result.sequences), expected)
    np.testing.assert_array_equal(_lengths(expected), STEPS)


# ---------------------------------------------------------------------------------------------
# What cannot be bridged
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"normalize_before": True}, "pre-LN"),
        ({"pad_token_id": 49}, "pad_token_id=49 .* remap"),
        ({"decoder_start_token_id": 0}, "decoder_start_token_id=0 .* Opus-MT"),
        ({"eos_token_id": 0}, "eos_token_id=0"),
        ({"activation_function": "gelu_new"}, "activation_function='gelu_new'"),
        ({"decoder_vocab_size": 60}, "decoder_vocab_size=60 differ"),
        ({"decoder_attention_heads": 4}, "attention heads differ"),
        ({"decoder_ffn_dim": 64}, "ffn dims differ"),
        ({"encoder_layerdrop": 0.1}, "LayerDrop"),
    ],
)
def test_unbridgeable_configs_are_refused(changes, message):
    config = marian_config.marian_test_config(**SIZES)
    for name, value in changes.items():
        setattr(config, name, value)
    with pytest.raises(ValueError, match=message):
        marian.marian_to_config(config)


def test_other_architectures_and_activations_are_refused():
    with pytest.raises(ValueError, match="model_type 'marian'"):
        marian.marian_to_config(transformers.BartConfig())
    with pytest.raises(ValueError, match="activation='tanh'"):
        marian_config.marian_test_config(activation="tanh")


def _fresh_model(model_class=None):
    torch.manual_seed(0)
    model_class = model_class or transformers.MarianMTModel
    return model_class(marian_config.marian_test_config(**SIZES)).eval()


def test_config_not_describing_the_model_is_refused():
    model = _fresh_model()
    config = marian.marian_to_config(model.config)
    wrong = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, pre_norm=True))
    with pytest.raises(ValueError, match="encoder.pre_norm=True .needs False."):
        marian.marian_to_params(model, wrong)
    wrong = dataclasses.replace(config, share_embeddings=False)
    with pytest.raises(ValueError, match="share_embeddings=False .needs True."):
        marian.marian_to_params(model, wrong)


def test_models_with_other_weights_are_refused():
    model = _fresh_model()
    model.lm_head = torch.nn.Linear(SIZES["d_model"], SIZES["vocab_size"], bias=False)
    with pytest.raises(ValueError, match="lm_head.weight .* weights differ"):
        marian.from_marian(model)
    model = _fresh_model()
    with torch.no_grad():
        model.model.decoder.embed_positions.weight.add_(0.01)
    with pytest.raises(ValueError, match="decoder.embed_positions is not Marian's sinusoidal"):
        marian.from_marian(model)
    with pytest.raises(ValueError, match="pass a MarianMTModel"):
        marian.from_marian(_fresh_model(transformers.MarianModel))


def test_marian_config_module_does_not_load_jax():
    # The Hugging Face benchmark peer builds its model from it in a process of its own, where
    # loading JAX would add ~150 MiB to the peer's peak RSS.
    code = (
        "import sys, s2s_jax.models.marian_config\n"
        "print(sorted({'jax', 'flax'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
