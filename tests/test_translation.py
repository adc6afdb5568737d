"""Real-data path: a TFDS dataset by name, SentencePiece trained into the workdir, Grain batches."""

import json

import numpy as np
import pytest
from toy_translation import NAME, SIZES, build

from s2s_jax.config import apply_overrides, load_experiment
from s2s_jax.data.config import DataConfig
from s2s_jax.data.tfds_source import DatasetNotPreparedError
from s2s_jax.data.translation import build_translation_data
from s2s_jax.data.vocab import EOS_ID, PAD_ID


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("tfds")))


def toy_config(data_dir, family="lstm_attention", **overrides):
    config = load_experiment(f"experiments/bible_es_en_{family}.py", "tiny")
    base = {"data.tfds_name": NAME, "data.tfds_data_dir": data_dir, "data.vocab_size": "40"}
    return apply_overrides(config, list({**base, **overrides}.items()))


def toy_data(config, workdir, **kwargs):
    kwargs = {"eval_batch_size": 8, **kwargs}
    return build_translation_data(DataConfig.from_section(config.data), 0, workdir, **kwargs)


def test_builds_tokenizers_batches_and_eval_split(data_dir, tmp_path):
    config = toy_config(data_dir)
    data = toy_data(config, tmp_path, max_eval=0)
    assert (tmp_path / "spm_shared.model").is_file()
    assert data.src_vocab is data.tgt_vocab and data.src_vocab.size == 40
    assert data.input_features == 0 and data.default_metrics == (
        "bleu",
        "chrf",
        "ter",
        "exact_match",
    )
    assert len(data.eval_examples) == SIZES["validation"]
    first = data.eval_examples[0]
    assert first["inputs"].endswith(".") and first["targets"].startswith("the ")
    batch = next(data.train)
    assert batch["inputs"].shape[0] == config.data.batch_size
    assert batch["inputs"].shape[1] in data.buckets and batch["targets"].shape[1] in data.buckets
    np.testing.assert_array_equal(batch["inputs_mask"], batch["inputs"] != PAD_ID)
    for row in batch["targets"]:  # every row ends with EOS, then padding
        real = row[row != PAD_ID]
        assert real[-1] == EOS_ID and np.all(row[len(real) :] == PAD_ID)
    text = data.tgt_vocab.decode(data.eval_batches[0]["targets"][0])
    assert text == data.eval_examples[int(data.eval_batches[0]["index"][0])]["targets"]
    for eval_batch in data.eval_batches:
        np.testing.assert_array_equal(eval_batch["inputs_mask"], eval_batch["inputs"] != PAD_ID)


def test_tokenizers_are_reloaded_from_the_workdir(data_dir, tmp_path):
    config = toy_config(data_dir)
    toy_data(config, tmp_path)
    before = (tmp_path / "spm_shared.model").read_bytes()
    again = toy_data(config, tmp_path)
    assert (tmp_path / "spm_shared.model").read_bytes() == before
    assert again.src_vocab.encode("el gato come pan.")


def test_packed_batches_carry_segments(data_dir, tmp_path):
    config = toy_config(data_dir, **{"data.pack_length": "32"})
    batch = next(toy_data(config, tmp_path).train)
    assert batch["inputs"].shape == batch["inputs_mask"].shape == (config.data.batch_size, 32)
    assert batch["targets_segmentation"].max() >= 2  # several examples share a row
    np.testing.assert_array_equal(batch["inputs_mask"], batch["inputs_segmentation"] > 0)


def test_missing_dataset_says_how_to_prepare(tmp_path):
    config = toy_config(str(tmp_path / "empty"), **{"data.tfds_name": "ted_hrlr_translate/pt_to_en",
                                                    "data.src_lang": "pt"})  # fmt: skip
    with pytest.raises(DatasetNotPreparedError, match="ted_hrlr_translate"):
        toy_data(config, tmp_path)


@pytest.mark.slow  # ~1 min each; .ci/run runs the slow tests too
@pytest.mark.parametrize(
    "family,overrides",
    [("lstm_attention", {}), ("transformer", {"data.pack_length": "32"})],
)
def test_train_evaluate_and_decode_on_tfds(data_dir, tmp_path, family, overrides):
    from s2s_jax.run.inference import Translator, evaluate_workdir
    from s2s_jax.run.train import train_and_evaluate

    config = toy_config(data_dir, family, **overrides)
    metrics = train_and_evaluate(config, tmp_path)
    assert {"bleu", "chrf", "ter", "loss"} <= set(metrics) and 0 <= metrics["bleu"] <= 100
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["bleu_signature"].startswith("nrefs:1") and "tok:13a" in saved["bleu_signature"]
    # `s2s evaluate` scores the whole split; training's periodic BLEU only eval.max_examples.
    assert config.eval.max_examples < SIZES["test"]
    result = evaluate_workdir(tmp_path, split="test")
    assert len(result.hypotheses) == SIZES["test"]
    assert (tmp_path / "evaluate_test_greedy.json").is_file()
    assert len(evaluate_workdir(tmp_path, split="test", max_examples=5).hypotheses) == 5
    out = Translator(tmp_path).translate(["el gato come pan.", "la niña ve una casa."])
    assert len(out) == 2 and all(isinstance(text, str) for ((text, _),) in out)


@pytest.mark.slow
def test_resume_with_grain_iterator_is_bit_identical(data_dir, tmp_path, monkeypatch):
    import jax
    from test_train import _preempt_after, final_state

    from s2s_jax.run import train as loop

    config = toy_config(data_dir, "transformer", **{"data.pack_length": "32"})
    loop.train_and_evaluate(config, tmp_path / "straight")
    with monkeypatch.context() as m:
        _preempt_after(7, m)
        assert loop.train_and_evaluate(config, tmp_path / "resumed") == {}
    loop.train_and_evaluate(config, tmp_path / "resumed")
    (a, data_a), (b, data_b) = (final_state(config, tmp_path / d) for d in ("straight", "resumed"))
    assert data_a == data_b and int(a.step) == int(b.step) == config.train.num_steps
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
