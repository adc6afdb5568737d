"""Tests for s2s_jax.data.types and the Tokenizer protocol: the interfaces the data layer keeps."""

import dataclasses
import inspect
import json
import string

import numpy as np
import pytest

from s2s_jax.data.batching import TrainBatches, encode_examples
from s2s_jax.data.grain_pipeline import make_train_iterator
from s2s_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece
from s2s_jax.data.types import Data, TrainIterator
from s2s_jax.data.vocab import EOS_ID, CharVocab, Tokenizer

VOCAB = CharVocab(string.ascii_lowercase + " ")
EXAMPLES = [
    {"inputs": "".join(np.random.default_rng(i).choice(list("abcdef"), size=1 + i % 9)),
     "targets": "abc"[: 1 + i % 3]}
    for i in range(200)
]  # fmt: skip


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    text = [e[side] for e in EXAMPLES for side in ("inputs", "targets")] + ["the cat sat"] * 20
    path = tmp_path_factory.mktemp("spm") / "m.model"
    return SentencePieceTokenizer(train_sentencepiece(text, path, vocab_size=30))


@pytest.fixture(params=["chars", "sentencepiece"])
def tokenizer(request, sentencepiece):
    return VOCAB if request.param == "chars" else sentencepiece


def _protocol_parameters(method):
    return [p for p in inspect.signature(getattr(Tokenizer, method)).parameters if p != "self"]


def test_tokenizers_satisfy_the_protocol(tokenizer):
    assert isinstance(tokenizer, Tokenizer)
    # isinstance only sees names; the calls the pipeline makes must fit the signatures too.
    for method in ("encode", "decode"):
        parameters = inspect.signature(getattr(tokenizer, method)).parameters
        assert list(parameters)[: len(_protocol_parameters(method))] == _protocol_parameters(method)
        required = [p for p in parameters.values() if p.default is inspect.Parameter.empty]
        assert len(required) == len(_protocol_parameters(method))
    assert isinstance(tokenizer.size, int) and tokenizer.size > EOS_ID
    ids = tokenizer.encode(text="abc")
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids=np.asarray([*ids, EOS_ID, 7])) == "abc"
    assert tokenizer.decode(ids=[*ids, EOS_ID]) == "abc"


@pytest.mark.parametrize("missing", ["size", "encode", "decode"])
def test_an_object_without_a_member_is_no_tokenizer(missing):
    members = {
        "size": property(lambda self: 5),
        "encode": lambda self, text: [],
        "decode": lambda self, ids: "",
    }
    del members[missing]
    assert not isinstance(type("Partial", (), members)(), Tokenizer)
    complete = {"size": 5, "encode": lambda self, text: [], "decode": lambda self, ids: ""}
    assert isinstance(type("Complete", (), complete)(), Tokenizer)


def _train_batches():
    return TrainBatches(encode_examples(EXAMPLES, VOCAB, VOCAB), 4, (4, 8, 12), seed=0)


def _grain_iterator():
    return make_train_iterator(EXAMPLES, (VOCAB, VOCAB), batch_size=4, max_length=12, seed=0)


@pytest.mark.parametrize("make", [_train_batches, _grain_iterator], ids=["task", "grain"])
def test_train_iterators_satisfy_the_protocol(make):
    iterator = make()
    assert isinstance(iterator, TrainIterator)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(3)]
    resumed = make()
    resumed.set_state(state)
    for batch, again in zip(expected, (next(resumed) for _ in range(3)), strict=True):
        assert {"inputs", "inputs_mask", "targets"} <= set(batch)
        for key in batch:
            np.testing.assert_array_equal(batch[key], again[key])


def test_a_plain_iterator_is_no_train_iterator():
    assert not isinstance(iter([{}]), TrainIterator)


def test_data_fields():
    fields = {f.name: f for f in dataclasses.fields(Data)}
    assert list(fields) == [
        "src_vocab", "tgt_vocab", "train", "eval_examples", "eval_batches", "buckets",
        "default_metrics", "input_features",
    ]  # fmt: skip
    assert fields["input_features"].default == 0
