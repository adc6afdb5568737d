"""Tests for s2s_jax.data.tfds_source on tiny array_record datasets built locally (no downloads)."""

import json
import pickle

import grain
import pytest
import tensorflow_datasets as tfds

from s2s_jax.data.tfds_source import DatasetNotPreparedError, TranslationSource, translation_source

_LANGS = {"de-en": ("de", "en"), "pt_to_en": ("pt", "en")}
_WORDS = {"de": "Straße {}", "pt": "coração {}", "en": "street {}"}
_SIZES = {"train": 12, "validation": 4}
NAME = "tiny_translate"


class TinyTranslate(tfds.core.GeneratorBasedBuilder):
    """Mimics TFDS translation datasets: one config per language pair, a Translation feature."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in _LANGS]

    def _info(self):
        langs = _LANGS[self.builder_config.name]
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.Translation(languages=langs),
            supervised_keys=langs,
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(n) for split, n in _SIZES.items()}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {lang: _WORDS[lang].format(i) for lang in _LANGS[self.builder_config.name]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    for config in _LANGS:
        TinyTranslate(
            config=config, data_dir=path, file_format="array_record"
        ).download_and_prepare()
    return path


def _expected(src, tgt, n):
    return sorted((_WORDS[src].format(i), _WORDS[tgt].format(i)) for i in range(n))


def _pairs(examples):
    return [(e["inputs"], e["targets"]) for e in examples]


@pytest.mark.parametrize(
    "config, src, tgt", [("de-en", "de", "en"), ("de-en", "en", "de"), ("pt_to_en", "pt", "en")]
)
def test_reads_every_pair_as_text(data_dir, config, src, tgt):
    source = translation_source(
        f"{NAME}/{config}", split="train", data_dir=data_dir, src_lang=src, tgt_lang=tgt
    )
    assert len(source) == _SIZES["train"]
    examples = [source[i] for i in range(len(source))]
    assert all(set(e) == {"inputs", "targets"} for e in examples)
    assert all(isinstance(s, str) and isinstance(t, str) for s, t in _pairs(examples))
    # TFDS shuffles records when writing, so compare as sets.
    assert sorted(_pairs(examples)) == _expected(src, tgt, _SIZES["train"])
    assert source[-1] == examples[-1]


def test_split_slicing_and_batched_reads(data_dir):
    source = translation_source(
        f"{NAME}/de-en", split="validation[:50%]", data_dir=data_dir, src_lang="de", tgt_lang="en"
    )
    assert len(source) == 2
    assert source.__getitems__([1, 0]) == [source[1], source[0]]


def test_grain_reads_it_and_it_pickles(data_dir):
    source = translation_source(
        f"{NAME}/pt_to_en", split="train", data_dir=data_dir, src_lang="pt", tgt_lang="en"
    )
    clone = pickle.loads(pickle.dumps(source))
    assert [clone[i] for i in range(3)] == [source[i] for i in range(3)]
    read = list(grain.MapDataset.source(source).map(lambda example: example["inputs"]))
    assert sorted(read) == sorted(_WORDS["pt"].format(i) for i in range(_SIZES["train"]))


def test_download_prepares_a_missing_dataset(tmp_path):
    source = translation_source(
        f"{NAME}/de-en",
        split="validation",
        data_dir=str(tmp_path),
        src_lang="de",
        tgt_lang="en",
        download=True,
    )
    assert sorted(_pairs(source[i] for i in range(len(source)))) == _expected("de", "en", 4)


@pytest.mark.parametrize("name", [f"{NAME}/de-en", "wmt14_translate/de-en"])
def test_unprepared_dataset_says_how_to_prepare(tmp_path, name):
    with pytest.raises(DatasetNotPreparedError) as info:
        translation_source(
            name, split="train", data_dir=str(tmp_path), src_lang="de", tgt_lang="en"
        )
    message = str(info.value)
    assert name in message and str(tmp_path) in message
    assert "not prepared" in message and "file_format='array_record'" in message


def test_unknown_dataset(tmp_path):
    with pytest.raises(DatasetNotPreparedError, match="no dataset named 'no_such_corpus/x-y'"):
        translation_source(
            "no_such_corpus/x-y", split="train", data_dir=str(tmp_path), src_lang="x", tgt_lang="y"
        )


def test_non_random_access_format_is_rejected(data_dir, tmp_path):
    # Writing tfrecord needs TensorFlow, so relabel an array_record copy as tfrecord.
    TinyTranslate(
        config="de-en", data_dir=str(tmp_path), file_format="array_record"
    ).download_and_prepare()
    (info_path,) = tmp_path.glob("tiny_translate/de-en/1.0.0/dataset_info.json")
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    with pytest.raises(DatasetNotPreparedError, match="tfrecord, which has no random access"):
        translation_source(
            f"{NAME}/de-en", split="train", data_dir=str(tmp_path), src_lang="de", tgt_lang="en"
        )


@pytest.mark.parametrize(
    "src, tgt, split, message",
    [
        ("fr", "en", "train", r"features \['de', 'en'\]"),
        ("en", "en", "train", "two different"),
        ("de", "en", "dev", "no split 'dev'"),
    ],
)
def test_bad_languages_or_split(data_dir, src, tgt, split, message):
    with pytest.raises(ValueError, match=message):
        translation_source(
            f"{NAME}/de-en", split=split, data_dir=data_dir, src_lang=src, tgt_lang=tgt
        )


def test_source_index_errors():
    source = TranslationSource([{"a": b"x", "b": "y"}], "a", "b")
    assert source[0] == {"inputs": "x", "targets": "y"}
    with pytest.raises(IndexError):
        source[1]
    with pytest.raises(TypeError):
        source["0"]
