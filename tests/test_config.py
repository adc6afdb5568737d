import json
from pathlib import Path

import pytest

from s2s_jax.config import (
    ConfigError,
    apply_overrides,
    base_config,
    flat_keys,
    load_experiment,
    model_part,
    parse_overrides,
    set_parts,
    to_dict,
)
from s2s_jax.models.parts import part_defaults


def test_parse_overrides_both_forms():
    pairs = parse_overrides(["--config.model.hidden_size=256", "--config.seed", "3"])
    assert pairs == [("model.hidden_size", "256"), ("seed", "3")]


def test_parse_overrides_rejects_other_flags():
    with pytest.raises(ConfigError, match="--config.a.b=v"):
        parse_overrides(["--hidden_size=3"])


@pytest.mark.parametrize(
    "key,raw,expected",
    [
        ("model.encoder.hidden_size", "256", 256),
        ("train.learning_rate", "1e-4", 1e-4),
        ("model.encoder.bidirectional", "true", True),
        ("model.decoder.attention", "bahdanau", "bahdanau"),
        ("data.buckets", "(8,16)", (8, 16)),
        ("train.learning_rate", "1", 1.0),
    ],
)
def test_apply_overrides_types(key, raw, expected):
    config = apply_overrides(base_config(), [(key, raw)])
    section, leaf = config, key
    for part in key.split(".")[:-1]:
        section = section[part]
    leaf = key.split(".")[-1]
    assert section[leaf] == expected
    assert type(section[leaf]) is type(expected)


def test_unknown_key_lists_valid_and_suggests():
    with pytest.raises(ConfigError) as err:
        apply_overrides(base_config(), [("model.encoder.hiden_size", "3")])
    message = str(err.value)
    assert "Unknown config key 'model.encoder.hiden_size'" in message
    assert "Did you mean model.encoder.hidden_size" in message
    assert "train.learning_rate" in message  # the valid keys are listed


@pytest.mark.parametrize(
    "key,raw,word",
    [("model.encoder.hidden_size", "big", "number"),
     ("model.decoder.hidden_size", "1.5", "integer"),
     ("model.encoder.bidirectional", "maybe", "bool")],
)  # fmt: skip
def test_bad_values(key, raw, word):
    with pytest.raises(ConfigError, match=word):
        apply_overrides(base_config(), [(key, raw)])


def test_overrides_do_not_mutate_input():
    config = base_config()
    apply_overrides(config, [("seed", "7")])
    assert config.seed == 0


def test_experiment_files_load_and_variants(tmp_path):
    names = sorted(p.stem for p in Path("experiments").glob("*.py"))
    assert "reverse_attention" in names and len(names) >= 7
    for name in names:
        full = load_experiment(f"experiments/{name}.py")
        tiny = load_experiment(f"experiments/{name}.py", "tiny")
        assert full.name == name and tiny.name == name + "_tiny"
        assert tiny.train.num_steps <= full.train.num_steps
        _assert_schema(full)
        _assert_schema(tiny)
    assert load_experiment("experiments/reverse_plain.py").model.decoder.attention == "none"


def test_experiment_setting_unknown_key_fails(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from s2s_jax.config import base_config\n"
        "def get_config():\n    c = base_config()\n    c.model.hiden = 3\n    return c\n"
    )
    with pytest.raises(ConfigError, match="Valid keys"):
        load_experiment(bad)


def test_missing_experiment_lists_shipped():
    with pytest.raises(ConfigError, match="reverse_attention.py"):
        load_experiment("experiments/nope.py")


def test_to_dict_is_json():
    d = to_dict(base_config())
    assert json.loads(json.dumps(d)) == d
    assert d["model"]["encoder"] == {"type": "rnn", **d["model"]["encoder"]}
    assert d["model"]["decoder"]["hidden_size"] == 128


def _assert_schema(config):
    """No key added or lost: the base schema, with each model part's keys those of its type."""
    base = [
        k
        for k in flat_keys(base_config())
        if not k.startswith(("model.encoder.", "model.decoder."))
    ]
    assert [
        k for k in flat_keys(config) if not k.startswith(("model.encoder.", "model.decoder."))
    ] == base
    for side in ("encoder", "decoder"):
        section = config.model[side]
        assert set(section) == set(part_defaults(side, section.type))


def test_type_override_switches_to_that_types_keys():
    config = apply_overrides(
        base_config(),
        [("model.encoder.d_model", "32"), ("model.encoder.type", "transformer")],
    )
    assert config.model.encoder.type == "transformer" and config.model.encoder.d_model == 32
    assert "hidden_size" not in config.model.encoder
    assert config.model.decoder.type == "rnn"  # the other side is untouched
    with pytest.raises(ConfigError, match="Unknown model.decoder.type 'lstm'; registered"):
        apply_overrides(base_config(), [("model.decoder.type", "lstm")])


def test_a_key_of_another_type_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"model.encoder.hidden_size, model.decoder.hidden_size"):
        apply_overrides(base_config(), [("model.hidden_size", "3")])
    with pytest.raises(ConfigError, match="Did you mean model.decoder.attention"):
        apply_overrides(base_config(), [("model.encoder.attention", "bahdanau")])
    with pytest.raises(ConfigError, match=r"has no key 'hiden_size'. Did you mean hidden_size"):
        model_part("encoder", "rnn", hiden_size=3)
    with pytest.raises(ConfigError, match="model.decoder of type 'transformer' has no key 'input'"):
        config = base_config()
        config.model.decoder = model_part("decoder", "transformer")
        set_parts(config.model, input="features")


def test_set_parts_sets_both_sides():
    config = base_config()
    set_parts(config.model, hidden_size=7, cell="gru")
    assert config.model.encoder.hidden_size == config.model.decoder.hidden_size == 7
    assert config.model.encoder.cell == config.model.decoder.cell == "gru"


def test_a_tuple_of_names_needs_no_quotes():
    config = apply_overrides(
        base_config(), [("eval.metrics", "bleu,chrf"), ("data.buckets", "(8,16)")]
    )
    assert config.eval.metrics == ("bleu", "chrf") and config.data.buckets == (8, 16)
    assert apply_overrides(base_config(), [("eval.metrics", "wer")]).eval.metrics == ("wer",)
    with pytest.raises(ConfigError, match="is a tuple"):
        apply_overrides(base_config(), [("data.buckets", "8;16")])
