"""Tests for s2s_jax.data.pipeline: build_data for synthetic tasks (tokens and float frames)."""

import numpy as np
import pytest

from s2s_jax.data.config import DataConfig
from s2s_jax.data.pipeline import build_data
from s2s_jax.data.types import TrainIterator
from s2s_jax.data.vocab import PAD_ID

SMALL = {"min_length": 2, "max_length": 7, "num_train": 400, "num_eval": 40, "batch_size": 8}


def _data(task, **overrides):
    config = DataConfig(task=task, **{**SMALL, **overrides})
    return build_data(config, seed=1, eval_batch_size=16)


def test_token_task():
    data = _data("reverse")
    assert data.src_vocab is data.tgt_vocab and data.input_features == 0
    assert data.default_metrics == ("exact_match", "exact_match_by_length")
    assert isinstance(data.train, TrainIterator)
    assert data.buckets == (4, 8)  # 7 digits + EOS
    assert all(isinstance(e["inputs"], str) for e in data.eval_examples)
    for batch in [next(data.train), *data.eval_batches]:
        assert batch["inputs"].dtype == np.int32
        np.testing.assert_array_equal(batch["inputs_mask"], batch["inputs"] != PAD_ID)


def test_float_frame_task():
    data = _data("noisy_digits")
    assert data.src_vocab is None and data.input_features == 10
    assert data.default_metrics == ("exact_match", "exact_match_by_length")
    # 7 frames (no EOS) and 7 digits + EOS: the same buckets as the token task.
    assert data.buckets == (4, 8)
    batch = next(data.train)
    assert batch["inputs"].dtype == np.float32 and batch["inputs"].shape[::2] == (8, 10)
    assert batch["inputs_mask"].dtype == np.bool_
    for batch in data.eval_batches:
        for row, i in enumerate(batch["index"].tolist()):
            n = len(data.eval_examples[i]["inputs"]) if i >= 0 else 0
            assert batch["inputs_mask"][row].sum() == n
            assert data.tgt_vocab.decode(batch["targets"][row]) == (
                data.eval_examples[i]["targets"] if i >= 0 else ""
            )


def test_max_eval_and_configured_buckets():
    data = build_data(
        DataConfig(task="copy", buckets=(8, 16), **SMALL), seed=0, eval_batch_size=4, max_eval=5
    )
    assert len(data.eval_examples) == 5 and data.buckets == (8, 16)
    index = np.concatenate([b["index"] for b in data.eval_batches])
    assert sorted(index[index >= 0].tolist()) == list(range(5))


def test_tfds_needs_a_workdir():
    with pytest.raises(ValueError, match="needs a workdir"):
        build_data(DataConfig(source="tfds"), seed=0, eval_batch_size=4)
