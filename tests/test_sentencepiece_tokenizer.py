"""Tests for s2s_jax.data.sentencepiece_tokenizer."""

import io
import pickle

import numpy as np
import pytest
import sentencepiece as spm

from s2s_jax.data.sentencepiece_tokenizer import (
    SHARED_MODEL,
    SOURCE_MODEL,
    TARGET_MODEL,
    SentencePieceTokenizer,
    build_tokenizers,
    reservoir_sample,
    train_sentencepiece,
)
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, VocabError

_ES = "la casa del perro come pan y bebe agua niño señor río tierra cielo luz noche día"
_EN = "the house of a dog eats bread and drinks water boy lord river land sky light"
VOCAB = 40  # small enough for the toy corpus under both model types


def _sentences(words, n, seed):
    rng = np.random.default_rng(seed)
    vocabulary = words.split()
    return [" ".join(rng.choice(vocabulary, size=rng.integers(3, 9))) for _ in range(n)]


def _pairs(n=300):
    return list(zip(_sentences(_ES, n, 0), _sentences(_EN, n, 1), strict=True))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "es.model"
    return SentencePieceTokenizer(
        train_sentencepiece(_sentences(_ES, 300, 0), path, vocab_size=VOCAB)
    )


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_twice_gives_byte_identical_models(tmp_path, model_type):
    corpus = _sentences(_ES, 300, 0)
    first = train_sentencepiece(
        iter(corpus), tmp_path / "a.model", vocab_size=VOCAB, model_type=model_type, seed=3
    )
    second = train_sentencepiece(
        iter(corpus), tmp_path / "b.model", vocab_size=VOCAB, model_type=model_type, seed=3
    )
    with open(first, "rb") as f1, open(second, "rb") as f2:
        assert f1.read() == f2.read()
    assert SentencePieceTokenizer(first).model_type == model_type


def test_special_ids_are_pinned(tokenizer):
    assert tokenizer.size == VOCAB
    assert [tokenizer.id_to_piece(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)


@pytest.mark.parametrize("text", ["la casa del perro", "señor come pan y bebe agua", ""])
def test_encode_decode_round_trip_without_specials(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(4 <= i < tokenizer.size for i in ids)  # no BOS/EOS/PAD/UNK added
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("as_array", [False, True])
def test_decode_stops_at_eos_and_skips_pad_and_bos(tokenizer, as_array):
    ids = tokenizer.encode("el niño")
    after = tokenizer.encode("agua")
    full = [BOS_ID, *ids, PAD_ID, EOS_ID, *after, PAD_ID]
    assert tokenizer.decode(np.asarray(full) if as_array else full) == "el niño"


def test_unknown_characters_map_to_unk(tokenizer):
    assert UNK_ID in tokenizer.encode("la casa 東京")


@pytest.mark.parametrize("ids", [[5, VOCAB], [-1], [[5, 6]]])
def test_decode_rejects_bad_ids(tokenizer, ids):
    with pytest.raises(VocabError):
        tokenizer.decode(ids)


def test_pickle_round_trip(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone == tokenizer
    assert clone.encode("la casa") == tokenizer.encode("la casa")


def test_sample_is_deterministic_ordered_and_bounded():
    first = reservoir_sample(range(1000), 100, seed=7)
    assert first == reservoir_sample(iter(range(1000)), 100, seed=7)
    assert len(first) == 100 and first == sorted(set(first))
    assert first != reservoir_sample(range(1000), 100, seed=8)
    assert reservoir_sample(range(5), 100, seed=7) == [0, 1, 2, 3, 4]


def test_max_sentences_sample_follows_seed(tmp_path):
    corpus = _sentences(_ES, 300, 0) + _sentences(_EN, 300, 1)

    def train(seed, name):
        path = train_sentencepiece(
            corpus, tmp_path / name, vocab_size=VOCAB, seed=seed, max_sentences=20
        )
        with open(path, "rb") as f:
            return f.read()

    assert train(0, "a.model") == train(0, "b.model")
    assert train(0, "a.model") != train(1, "c.model")


def _no_reading():
    raise AssertionError("training pairs were read although the models exist")
    yield


def test_build_shared_trains_once_then_reloads(tmp_path):
    src, tgt = build_tokenizers(_pairs(), tmp_path, shared=True, vocab_size=VOCAB)
    assert src is tgt
    assert (tmp_path / SHARED_MODEL).exists()
    # One vocabulary covers both languages: neither side needs UNK.
    assert UNK_ID not in src.encode("señor") + src.encode("drinks water")
    src2, tgt2 = build_tokenizers(_no_reading(), tmp_path, shared=True, vocab_size=VOCAB)
    assert src2 == src and tgt2 == tgt


def test_build_separate_vocabularies(tmp_path):
    src, tgt = build_tokenizers(_pairs(), tmp_path, shared=False, vocab_size=VOCAB)
    assert (tmp_path / SOURCE_MODEL).exists() and (tmp_path / TARGET_MODEL).exists()
    assert src != tgt
    # "ñ" only occurs on the source side, "w" only on the target side.
    assert UNK_ID not in src.encode("niño") and UNK_ID in tgt.encode("niño")
    assert UNK_ID not in tgt.encode("water") and UNK_ID in src.encode("water")
    assert tgt.decode(tgt.encode("the dog eats bread")) == "the dog eats bread"
    reloaded = build_tokenizers(_no_reading(), tmp_path, shared=False, vocab_size=VOCAB)
    assert reloaded == (src, tgt)


@pytest.mark.parametrize("change", [{"vocab_size": VOCAB - 4}, {"model_type": "bpe"}])
def test_reload_with_other_options_fails(tmp_path, change):
    build_tokenizers(_pairs(), tmp_path, shared=True, vocab_size=VOCAB)
    options = {"vocab_size": VOCAB, "model_type": "unigram", **change}
    with pytest.raises(ValueError, match="fresh workdir"):
        build_tokenizers(_no_reading(), tmp_path, shared=True, **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"vocab_size": VOCAB, "model_type": "word"}, "model_type"),
        ({"vocab_size": 4}, "special tokens"),
        ({"vocab_size": 5000}, "lower vocab_size"),
        ({"vocab_size": VOCAB, "character_coverage": 0.0}, "character_coverage"),
    ],
)
def test_bad_options_raise(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        train_sentencepiece(_sentences(_ES, 300, 0), tmp_path / "x.model", **options)
    assert not (tmp_path / "x.model").exists()


def test_empty_corpus_raises(tmp_path):
    with pytest.raises(ValueError, match="no non-empty sentences"):
        train_sentencepiece(["", "  "], tmp_path / "x.model", vocab_size=VOCAB)


def test_loading_rejects_foreign_special_ids(tmp_path):
    # SentencePiece's defaults (unk=0, bos=1, eos=2, no pad) disagree with s2s_jax's ids.
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(_sentences(_ES, 100, 0)),
        model_writer=buffer,
        vocab_size=30,
        minloglevel=2,
    )
    (tmp_path / "foreign.model").write_bytes(buffer.getvalue())
    with pytest.raises(VocabError, match="special ids"):
        SentencePieceTokenizer(tmp_path / "foreign.model")


def test_loading_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        SentencePieceTokenizer(tmp_path / "none.model")
    (tmp_path / "bad.model").write_text("not a model")
    with pytest.raises(VocabError, match="not a readable"):
        SentencePieceTokenizer(tmp_path / "bad.model")
