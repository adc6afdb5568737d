"""Tests for s2s_jax.data.vocab."""

import json

import numpy as np
import pytest

from s2s_jax.data.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    CharVocab,
    VocabError,
)


def test_special_ids_are_fixed():
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert len(SPECIAL_TOKENS) == 4


def test_ids_follow_special_tokens_in_order():
    vocab = CharVocab("abc")
    assert vocab.size == 7
    assert vocab.encode("cab") == [6, 4, 5]


@pytest.mark.parametrize("text", ["", "0", "0123456789", "9+10", "++00"])
def test_round_trip(text):
    vocab = CharVocab("0123456789+")
    assert vocab.decode(vocab.encode(text)) == text


@pytest.mark.parametrize("as_array", [False, True])
def test_decode_stops_at_eos_and_skips_pad_bos(as_array):
    vocab = CharVocab("ab")
    a, b = vocab.encode("ab")
    ids = [BOS_ID, a, PAD_ID, b, UNK_ID, EOS_ID, a, b]
    if as_array:
        ids = np.asarray(ids, dtype=np.int32)
    assert vocab.decode(ids) == "ab?"


def test_unknown_characters_raise_listing_them_and_the_alphabet():
    vocab = CharVocab("0123")
    with pytest.raises(VocabError, match=r"\['x', 'y'\].*alphabet is '0123'"):
        vocab.encode("1y2x3y")


def test_allow_unk_maps_unknown_characters_to_unk():
    vocab = CharVocab("01")
    ids = vocab.encode("0x1", allow_unk=True)
    assert ids == [4, UNK_ID, 5]
    assert vocab.decode(ids) == "0?1"


def test_vocab_error_is_a_value_error():
    assert issubclass(VocabError, ValueError)


@pytest.mark.parametrize(
    ("chars", "match"), [("", "non-empty"), ("abca", r"distinct.*\['a'\]"), ("aabb", "'a', 'b'")]
)
def test_bad_alphabet_raises(chars, match):
    with pytest.raises(VocabError, match=match):
        CharVocab(chars)


@pytest.mark.parametrize("bad", [[99], [[4, 5]]])
def test_decode_rejects_out_of_range_or_2d_ids(bad):
    with pytest.raises(VocabError, match="outside|1-D"):
        CharVocab("ab").decode(bad)


def test_dict_round_trip_is_json_serialisable():
    vocab = CharVocab("xyz+")
    restored = CharVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.encode("z+x") == vocab.encode("z+x")


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ({"kind": "sentencepiece", "chars": "ab"}, "Not a saved CharVocab"),
        ({"kind": "char", "chars": "ab", "special_tokens": ["<s>"]}, "special tokens"),
    ],
)
def test_from_dict_rejects_foreign_data(d, match):
    with pytest.raises(VocabError, match=match):
        CharVocab.from_dict(d)


def test_save_and_load(tmp_path):
    path = tmp_path / "vocab.json"
    vocab = CharVocab("0123456789+")
    vocab.save(path)
    loaded = CharVocab.load(path)
    assert loaded == vocab
    assert loaded.size == vocab.size


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CharVocab.load(path)
