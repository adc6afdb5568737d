import json
from pathlib import Path

import pytest

from s2s_jax.config import (
    ConfigError,
    apply_overrides,
    base_config,
    flat_keys,
    load_experiment,
    parse_overrides,
    to_dict,
)


def test_parse_overrides_both_forms():
    pairs = parse_overrides(["--config.model.hidden_size=256", "--config.seed", "3"])
    assert pairs == [("model.hidden_size", "256"), ("seed", "3")]


def test_parse_overrides_rejects_other_flags():
    with pytest.raises(ConfigError, match="--config.a.b=v"):
        parse_overrides(["--hidden_size=3"])


@pytest.mark.parametrize(
    "key,raw,expected",
    [
        ("model.hidden_size", "256", 256),
        ("train.learning_rate", "1e-4", 1e-4),
        ("model.bidirectional", "true", True),
        ("model.attention", "bahdanau", "bahdanau"),
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
        apply_overrides(base_config(), [("model.hiden_size", "3")])
    message = str(err.value)
    assert "Unknown config key 'model.hiden_size'" in message
    assert "Did you mean model.hidden_size" in message
    assert "train.learning_rate" in message  # the valid keys are listed


@pytest.mark.parametrize(
    "key,raw,word",
    [("model.hidden_size", "big", "number"), ("model.hidden_size", "1.5", "integer"),
     ("model.bidirectional", "maybe", "bool")],
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
        assert flat_keys(full) == flat_keys(base_config())  # no key added or lost
    assert load_experiment("experiments/reverse_plain.py").model.attention == "none"


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
    assert d["model"]["hidden_size"] == 128
