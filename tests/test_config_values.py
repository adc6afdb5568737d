"""Tests for s2s_jax.config_values: every bad value is one ConfigError line, before any compile."""

import math

import pytest

from s2s_jax.config import ConfigError, base_config, flat_keys, load_train_config
from s2s_jax.config_values import RULES

EXPERIMENT = "experiments/reverse_attention.py:tiny"
# Wrong type, zero, negative, NaN, inf, huge, empty string, fractional.
BAD_RAW = ("0", "-1", "-5", "nan", "1e999", "-1e999", "1e30", "", "abc", "0.5", "true")


def _numeric_keys() -> list[str]:
    config = base_config()
    keys = []
    for key in flat_keys(config):
        section, _, leaf = key.rpartition(".")
        value = config[section][leaf] if section else config[leaf]
        if isinstance(value, int | float) and not isinstance(value, bool):
            keys.append(key)
    return [k for k in keys if not k.startswith("model.")]


def test_every_number_of_the_base_config_has_a_rule():
    assert sorted(_numeric_keys()) == sorted(RULES)


def _coerced(raw: str, default):
    """What the override gives the key, or None when the raw text is not such a number."""
    try:
        value = float(raw) if raw.strip() else None
    except ValueError:
        return None
    if value is None or math.isnan(value):
        return None  # config.py's parser takes no nan: a type error
    if isinstance(default, int):
        return int(value) if value.is_integer() and math.isfinite(value) else None
    return value


@pytest.mark.parametrize("key", sorted(RULES))
def test_fuzzed_values_are_accepted_in_range_and_refused_in_one_line(key):
    what, ok = RULES[key]
    config = base_config()
    section, _, leaf = key.rpartition(".")
    default = config[section][leaf] if section else config[leaf]
    refused = 0
    for raw in BAD_RAW:
        value = _coerced(raw, default)
        try:
            load_train_config(EXPERIMENT, [f"--config.{key}={raw}"])
        except ConfigError as error:  # the only exception allowed: one line, naming the key
            message = str(error)
            assert "\n" not in message and key in message, message
            refused += 1
            continue
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"--config.{key}={raw!r} raised {type(error).__name__}: {error}")
        # Accepted: the value must be one the rule allows (relations may refuse more).
        assert value is not None and ok(value), f"--config.{key}={raw!r} was accepted"
    assert refused >= 3  # at least the type errors and one out-of-range value


@pytest.mark.parametrize(
    "override, says",
    [
        ("train.num_steps=0", "integer >= 1"),
        ("train.num_steps=-5", "integer >= 1"),
        ("train.learning_rate=-1", "finite number > 0"),
        ("train.learning_rate=1e999", "finite number > 0"),
        ("train.warmup_steps=-10", "integer >= 0"),
        ("train.log_every=0", "integer >= 1"),
        ("eval.every_steps=0", "integer >= 1"),
        ("eval.max_length_ratio=-1", "finite number >= 0"),
        ("eval.beam_size=0", "integer >= 1"),
        ("name=../../x", "plain folder name"),
        ("name=a/b", "plain folder name"),
        ("data.min_length=99", "below data.min_length=99"),
    ],
)
def test_the_reported_bad_inputs_are_refused(override, says):
    with pytest.raises(ConfigError, match=says):
        load_train_config(EXPERIMENT, [f"--config.{override}"])


def test_relations_between_keys():
    load_train_config(EXPERIMENT, ["--config.eval.max_length_ratio=0"])  # the offset is left
    with pytest.raises(ConfigError, match="both 0"):
        load_train_config(
            EXPERIMENT, ["--config.eval.max_length_ratio=0", "--config.eval.max_length_offset=0"]
        )
    with pytest.raises(ConfigError, match="nbest=5 exceeds eval.beam_size=4"):
        load_train_config(EXPERIMENT, ["--config.eval.decode=beam", "--config.eval.nbest=5"])


@pytest.mark.parametrize(
    "body, says",
    [
        ("def get_config(:\n", r"bad\.py:1: SyntaxError"),
        ("x = 1\ndef get_config():\n    return undefined_name\n", r"bad\.py:3: NameError"),
        ("import no_such_module_xyz\n", r"bad\.py:1: ModuleNotFoundError"),
        ("def get_config():\n    raise RuntimeError('boom')\n", r"bad\.py:2: RuntimeError: boom"),
    ],
)
def test_a_broken_experiment_file_is_one_line_with_file_and_line(tmp_path, body, says):
    (tmp_path / "bad.py").write_text(body)
    with pytest.raises(ConfigError, match=says) as raised:
        load_train_config(str(tmp_path / "bad.py"), [])
    assert "\n" not in str(raised.value)


def test_a_json_file_as_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an experiment file"):
        load_train_config(str(tmp_path / "config.json"), [])
