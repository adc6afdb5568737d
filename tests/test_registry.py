"""The encoder/decoder registries: building pairs, per-type keys, and what a pair must fit."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from s2s_jax.config import apply_overrides, base_config, model_part
from s2s_jax.models import parts, registry
from s2s_jax.models.frontends import FeatureProjection
from s2s_jax.models.types import Seq2SeqModel


def _model(*overrides, src=11, tgt=13, features=0):
    config = apply_overrides(base_config(), list(overrides))
    return registry.build_model(config.model, src, tgt, features)


def test_every_type_declares_only_non_injected_keys_and_builds():
    for side, registered in registry.REGISTRIES.items():
        for name, part in registered.items():
            keys = parts.part_defaults(side, name)
            assert keys["type"] == name
            assert not set(keys) & set(parts.INJECTED)
            assert {f.name for f in dataclasses.fields(part.config)} >= set(keys) - {"type"}


def test_describe_names_both_parts_and_their_injected_sizes():
    _, config = _model(("model.encoder.type", "transformer"))
    described = registry.describe(config)
    assert described["encoder"]["type"] == "transformer" and described["decoder"]["type"] == "rnn"
    assert described["encoder"]["vocab_size"] == 11 and described["decoder"]["vocab_size"] == 13


def test_a_key_of_another_type_in_a_section_is_refused():
    section = base_config().model.to_dict()
    section["encoder"]["attention"] = "bahdanau"
    with pytest.raises(ValueError, match="model.encoder of type 'rnn' has no key"):
        registry.model_config(section, 11, 13)
    old = {"family": "rnn", **base_config().model.to_dict()}
    with pytest.raises(ValueError, match="from before encoders and decoders were separate"):
        registry.model_config(old, 11, 13)


def test_pairs_that_cannot_fit_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="luong_dot attention needs encoder outputs"):
        _model(("model.encoder.bidirectional", "true"), ("model.decoder.attention", "luong_dot"))
    with pytest.raises(ValueError, match="share_embeddings needs token sources and one vocab"):
        _model(("model.share_embeddings", "true"), src=11, tgt=13)
    with pytest.raises(ValueError, match="equal embedding widths"):
        _model(("model.share_embeddings", "true"), ("model.encoder.embed_dim", "8"), src=13)
    with pytest.raises(ValueError, match="use the encoder input 'features'"):
        _model(src=0, features=4)  # float frames given to a token front end
    with pytest.raises(ValueError, match="use the encoder input 'tokens'"):
        _model(("model.encoder.input", "features"), features=0)


def test_a_transformer_encoder_pairs_with_an_lstm_decoder_and_meets_the_protocol():
    model, config = _model(("model.encoder.type", "transformer"))
    assert isinstance(model, Seq2SeqModel)
    assert config.encoder.output_size == 128 and config.decoder.hidden_size == 128
    inputs, mask = model.example_inputs(5)
    variables = model.init(jax.random.key(0), inputs, jnp.ones((1, 3), jnp.int32),
                           inputs_mask=mask, train=False)  # fmt: skip
    params = variables["params"]
    assert set(params) == {"encoder", "decoder"}
    assert "mean_bridge" in params["decoder"]  # no recurrent final state: starts from the mean


def test_shared_embeddings_live_once_at_the_top():
    c = base_config()
    c.model.share_embeddings = True
    model, _ = registry.build_model(c.model, 13, 13)
    inputs, mask = model.example_inputs(4)
    params = model.init(jax.random.key(0), inputs, inputs, inputs_mask=mask, train=False)
    params = params["params"]
    assert "shared_embedding" in params
    assert "embedding" not in params["encoder"] and "embedding" not in params["decoder"]


def test_feature_frames_of_the_wrong_width_fail_clearly():
    projection = FeatureProjection(input_features=4, features=8)
    with pytest.raises(ValueError, match=r"expects float frames \[batch, length, 4\]"):
        projection.init(jax.random.key(0), jnp.zeros((1, 3, 5)))


def test_model_part_sections_are_locked():
    section = model_part("decoder", "transformer")
    with pytest.raises(AttributeError):
        section.hidden_size = 3


def test_both_registries_name_the_same_part_configs():
    for side, modules in registry.REGISTRIES.items():
        assert {n: p.config for n, p in modules.items()} == parts.CONFIGS[side]


def test_loading_an_experiment_never_starts_jax():
    # Peers measured alone (benchmarks/peak_rss.py) and `s2s` start-up rely on it.
    code = (
        "import sys; from s2s_jax.config import load_experiment; "
        "load_experiment('experiments/bench_w2_transformer.py'); "
        "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
