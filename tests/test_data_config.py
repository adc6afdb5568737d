"""Tests for s2s_jax.data.config: DataConfig mirrors the config's data section and validates it."""

import dataclasses

import pytest

from s2s_jax.config import base_config
from s2s_jax.data.config import DataConfig


def test_defaults_match_the_base_config():
    section = base_config().data
    assert set(section) == {f.name for f in dataclasses.fields(DataConfig)}
    assert DataConfig.from_section(section) == DataConfig()


def test_from_section_reads_values_and_is_frozen():
    config = DataConfig.from_section({"task": "noisy_digits", "buckets": [8, 16], "noise_std": 0})
    assert config.task == "noisy_digits" and config.buckets == (8, 16) and config.noise_std == 0
    assert config.batch_size == DataConfig().batch_size  # keys left out keep their defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.task = "copy"


def test_unknown_key_raises():
    with pytest.raises(ValueError, match="Unknown data key.*batchsize.*Fix the spelling"):
        DataConfig.from_section({"batchsize": 8})


TFDS = {"source": "tfds"}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"source": "hdf5"}, r"Unknown data.source 'hdf5'; valid: task, tfds"),
        ({"task": "multiply"}, r"Unknown data.task 'multiply'; valid: .*noisy_digits"),
        ({"min_length": 0}, r"data.min_length must be >= 1"),
        ({"min_length": 6, "max_length": 5}, r"below data.min_length=6; raise max_length"),
        ({"num_train": 0}, r"data.num_train must be >= 1"),
        ({"num_eval": 0}, r"data.num_eval must be >= 1"),
        ({"noise_std": -0.5}, r"data.noise_std must be a finite value >= 0"),
        ({"noise_std": float("inf")}, r"data.noise_std must be a finite value >= 0"),
        ({"batch_size": 0}, r"data.batch_size must be >= 1"),
        ({"buckets": (16, 8)}, r"strictly increasing.*\(\) to derive them"),
        ({"buckets": (0, 8)}, r"strictly increasing"),
        ({"pack_length": 32}, r"Set data.pack_length=0 or data.source='tfds'"),
        ({**TFDS, "tfds_name": ""}, r"data.tfds_name is empty"),
        ({**TFDS, "src_lang": "en", "tgt_lang": "en"}, r"both 'en'; name two different"),
        ({**TFDS, "spm_model_type": "word"}, r"Unknown data.spm_model_type 'word'; valid: unigram"),
        ({**TFDS, "vocab_size": 4}, r"data.vocab_size must be >= 5"),
        ({**TFDS, "max_tokens": 0}, r"data.max_tokens must be >= 1"),
        ({**TFDS, "pack_length": 32, "max_tokens": 64}, r"Raise pack_length or lower max_tokens"),
        ({**TFDS, "buckets": (8, 16), "max_tokens": 64}, r"add a bucket >= max_tokens"),
    ],
)
def test_bad_values_raise_with_the_fix(values, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**values)


@pytest.mark.parametrize(
    "values",
    [
        {"task": "noisy_digits", "noise_std": 0.0},
        {**TFDS, "pack_length": 64, "buckets": (8,)},  # packing ignores buckets
        {**TFDS, "task": "no such task", "min_length": 0},  # task keys are not read for tfds
        {"vocab_size": 0, "src_lang": "en"},  # nor tfds keys for tasks
    ],
)
def test_values_for_the_other_source_are_not_checked(values):
    DataConfig(**values)
