"""Tests for s2s_jax.data.grain_pipeline."""

import json
import string

import numpy as np
import pytest

from s2s_jax.data.grain_pipeline import make_eval_batches, make_train_iterator, train_dataset
from s2s_jax.data.packing import PACKED_KEYS, unpack
from s2s_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece
from s2s_jax.data.tasks import TaskConfig, make_splits, task_vocab
from s2s_jax.data.vocab import EOS_ID, PAD_ID, CharVocab

VOCAB = CharVocab(string.ascii_lowercase)
TOKENIZERS = (VOCAB, VOCAB)
MAX_LENGTH = 12  # ids, EOS included: sources of up to 11 characters are kept


def _examples(n=300, seed=0):
    """Distinct sources of 1..14 characters; the target is the reversed source."""
    rng = np.random.default_rng(seed)
    sources = set()
    while len(sources) < n:
        letters = rng.choice(list(string.ascii_lowercase), size=rng.integers(1, 15))
        sources.add("".join(letters))
    return [{"inputs": s, "targets": s[::-1]} for s in sorted(sources)]


# Grain's index shuffle costs ~60 ms / len(dataset) per element, so tiny sources are slow.
SOURCE = _examples()
KEPT = {(e["inputs"], e["targets"]) for e in SOURCE if len(e["inputs"]) < MAX_LENGTH}
# Float frames: noisy one-hot digits, 1..13 frames (up to 12 kept), reversed digits as targets.
_, FRAME_SOURCE = make_splits(
    TaskConfig(task="noisy_digits", min_length=1, max_length=13, num_train=0, num_eval=300)
)
DIGITS = task_vocab("noisy_digits")
FRAME_TOKENIZERS = (None, DIGITS)


def _assert_masks(batch):
    """Token batches: mask == ids != PAD; frame batches: a True prefix, zeros past it."""
    mask = batch["inputs_mask"]
    assert mask.dtype == np.bool_ and mask.shape == batch["inputs"].shape[:2]
    if batch["inputs"].ndim == 2:
        np.testing.assert_array_equal(mask, batch["inputs"] != PAD_ID)
    else:
        np.testing.assert_array_equal(mask, np.arange(mask.shape[1]) < mask.sum(1)[:, None])
        assert not batch["inputs"][~mask].any()


def _decoded_rows(batch):
    return [
        (VOCAB.decode(src), VOCAB.decode(tgt))
        for src, tgt in zip(batch["inputs"], batch["targets"], strict=True)
    ]


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("buckets", [None, (4, 8, 12)])
def test_bucketed_batches_have_fixed_shapes_and_valid_rows(buckets):
    it = make_train_iterator(
        SOURCE, TOKENIZERS, batch_size=4, max_length=MAX_LENGTH, seed=0, buckets=buckets
    )
    allowed = set(buckets or (4, 8, 12))  # auto_buckets(12) == (4, 8, 12)
    for batch in _take(it, 30):
        assert set(batch) == {"inputs", "inputs_mask", "targets"}
        assert batch["inputs"].dtype == np.int32 and batch["inputs"].shape[0] == 4
        _assert_masks(batch)
        assert {batch["inputs"].shape[1], batch["targets"].shape[1]} <= allowed
        for side in ("inputs", "targets"):
            lengths = np.sum(batch[side] != PAD_ID, axis=1)
            assert np.all(batch[side][np.arange(4), lengths - 1] == EOS_ID)
        # Rows are real pairs, never too long, and use the smallest bucket that fits.
        assert set(_decoded_rows(batch)) <= KEPT
        longest = max(len(s) for s, _ in _decoded_rows(batch)) + 1
        assert batch["inputs"].shape[1] == min(b for b in allowed if b >= longest)


def test_same_seed_same_batches_other_seed_other_batches():
    def first(seed):
        it = make_train_iterator(SOURCE, TOKENIZERS, batch_size=4, max_length=MAX_LENGTH, seed=seed)
        return _take(it, 8)

    _assert_same_batches(first(3), first(3))
    assert [_decoded_rows(b) for b in first(3)] != [_decoded_rows(b) for b in first(4)]


def test_each_epoch_is_a_new_permutation_of_the_kept_pairs():
    # One bucket and batch size 1 expose the example stream itself.
    it = make_train_iterator(
        SOURCE, TOKENIZERS, batch_size=1, max_length=MAX_LENGTH, seed=0, buckets=(MAX_LENGTH,)
    )
    epochs = [[_decoded_rows(b)[0] for b in _take(it, len(KEPT))] for _ in range(2)]
    assert set(epochs[0]) == set(epochs[1]) == KEPT
    assert len(set(epochs[0])) == len(KEPT)
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize(
    ("source", "tokenizers", "options"),
    [
        (SOURCE, TOKENIZERS, {"buckets": (4, 8, 12)}),
        (SOURCE, TOKENIZERS, {"pack_length": 16}),
        (FRAME_SOURCE, FRAME_TOKENIZERS, {"buckets": (4, 8, 12)}),
    ],
    ids=["bucketed", "packed", "frames"],
)
def test_resumed_iterator_yields_the_same_batches(source, tokenizers, options):
    def iterator():
        return make_train_iterator(
            source, tokenizers, batch_size=3, max_length=MAX_LENGTH, seed=5, **options
        )

    uninterrupted = _take(iterator(), 25)
    first = iterator()
    _take(first, 11)
    # States go into checkpoints as JSON: prove the round trip keeps them usable.
    state = json.loads(json.dumps(first.get_state()))
    resumed = iterator()
    resumed.set_state(state)
    _assert_same_batches(_take(resumed, 14), uninterrupted[11:])


def test_state_from_other_buckets_is_rejected():
    def iterator(buckets):
        return make_train_iterator(
            SOURCE, TOKENIZERS, batch_size=3, max_length=MAX_LENGTH, seed=5, buckets=buckets
        )

    state = iterator((4, 8, 12)).get_state()
    with pytest.raises(ValueError, match="other buckets"):
        iterator((6, 12)).set_state(state)


def test_packed_batches():
    it = make_train_iterator(
        SOURCE, TOKENIZERS, batch_size=4, max_length=MAX_LENGTH, seed=1, pack_length=16
    )
    seen = []
    for batch in _take(it, 10):
        assert set(batch) == set(PACKED_KEYS)
        assert all(a.shape == (4, 16) for a in batch.values())
        assert all(a.dtype == np.int32 for k, a in batch.items() if k != "inputs_mask")
        assert batch["inputs_mask"].dtype == np.bool_
        np.testing.assert_array_equal(batch["inputs_mask"], batch["inputs_segmentation"] > 0)
        seen += [(VOCAB.decode(s), VOCAB.decode(t)) for s, t in unpack(batch)]
    assert set(seen) <= KEPT
    # Packing puts more than one example per row on average here.
    assert len(seen) > 10 * 4


def _shard_iterator(shard_index, shard_count, batch_size, **options):
    return make_train_iterator(
        SOURCE,
        TOKENIZERS,
        batch_size=batch_size,
        max_length=MAX_LENGTH,
        seed=0,
        shard_index=shard_index,
        shard_count=shard_count,
        **options,
    )


def test_packed_shards_read_disjoint_parts_of_the_source():
    seen = []
    for shard_index in range(3):
        pairs = set()
        for batch in _take(_shard_iterator(shard_index, 3, 8, pack_length=16), 40):
            # 40 batches hold 2+ epochs of the ~80 kept pairs of one shard.
            pairs |= {(VOCAB.decode(s), VOCAB.decode(t)) for s, t in unpack(batch)}
        seen.append(pairs)
    assert set().union(*seen) == KEPT
    assert sum(len(s) for s in seen) == len(KEPT)  # disjoint


def test_bucketed_shards_split_the_global_batches():
    # Every process keeps its own rows of the batches one process of 3x the batch size sees:
    # together they cover each step exactly once, with the same shapes on every process.
    shards = [_shard_iterator(k, 3, 2) for k in range(3)]
    for global_batch in _take(_shard_iterator(0, 1, 6), 30):
        parts = [next(it) for it in shards]
        assert all(p["inputs"].shape == (2, global_batch["inputs"].shape[1]) for p in parts)
        for key in ("inputs", "inputs_mask", "targets"):
            np.testing.assert_array_equal(
                np.concatenate([p[key] for p in parts]), global_batch[key]
            )


def test_sentencepiece_tokenizers_with_threads(tmp_path):
    text = [e[side] for e in SOURCE for side in ("inputs", "targets")]
    spm = SentencePieceTokenizer(train_sentencepiece(text, tmp_path / "m.model", vocab_size=40))
    it = make_train_iterator(
        SOURCE, (spm, spm), batch_size=2, max_length=20, seed=0, read_threads=4
    )
    for batch in _take(it, 5):
        for src, tgt in zip(batch["inputs"], batch["targets"], strict=True):
            assert spm.decode(tgt) == spm.decode(src)[::-1]


def test_all_pairs_too_long_raises_instead_of_hanging():
    source = [{"inputs": "abcdefgh", "targets": "hgfedcba"}] * 1000
    it = make_train_iterator(source, TOKENIZERS, batch_size=1, max_length=4, seed=0)
    with pytest.raises(ValueError, match="skipped"):
        next(it)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"buckets": (4, 8), "pack_length": 16}, "not both"),
        ({"buckets": (4, 8)}, "largest is >= max_length"),
        ({"buckets": (8, 4, 12)}, "strictly increasing"),
        ({"pack_length": 8}, "pack_length=8"),
        ({"shard_index": 2, "shard_count": 2}, "shard_index"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(options, message):
    kwargs = {"batch_size": 2, "max_length": MAX_LENGTH, "seed": 0, **options}
    with pytest.raises(ValueError, match=message):
        train_dataset(SOURCE, TOKENIZERS, **kwargs)


def test_eval_batches_cover_every_example_once_in_order():
    batches = make_eval_batches(SOURCE, TOKENIZERS, batch_size=8)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0].tolist()) == list(range(len(SOURCE)))
    for batch in batches:
        assert batch["inputs"].shape[0] == 8
        _assert_masks(batch)
        for row, i in enumerate(batch["index"].tolist()):
            src, tgt = VOCAB.decode(batch["inputs"][row]), VOCAB.decode(batch["targets"][row])
            expected = (SOURCE[i]["inputs"], SOURCE[i]["targets"]) if i >= 0 else ("", "")
            assert (src, tgt) == expected
    # Nothing is too long for the default buckets; a second call is identical.
    _assert_same_batches(batches, make_eval_batches(SOURCE, TOKENIZERS, batch_size=8))


def test_eval_batches_max_examples_and_buckets():
    batches = make_eval_batches(SOURCE, TOKENIZERS, batch_size=4, buckets=(8, 16), max_examples=10)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0].tolist()) == list(range(10))
    assert {b["inputs"].shape[1] for b in batches} <= {8, 16}
    with pytest.raises(ValueError, match="empty"):
        make_eval_batches([], TOKENIZERS, batch_size=4)


def test_float_frame_batches():
    it = make_train_iterator(
        FRAME_SOURCE, FRAME_TOKENIZERS, batch_size=4, max_length=MAX_LENGTH, seed=0
    )
    frames_of = {e["targets"]: e["inputs"] for e in FRAME_SOURCE}  # distinct hidden digits
    for batch in _take(it, 20):
        inputs = batch["inputs"]
        assert inputs.dtype == np.float32 and inputs.shape[0::2] == (4, 10)
        assert inputs.shape[1] in (4, 8, 12)
        _assert_masks(batch)
        for row in range(4):
            frames = frames_of[DIGITS.decode(batch["targets"][row])]
            assert batch["inputs_mask"][row].sum() == len(frames) <= MAX_LENGTH
            np.testing.assert_array_equal(inputs[row, : len(frames)], frames)


def test_float_frame_eval_batches():
    batches = make_eval_batches(FRAME_SOURCE, FRAME_TOKENIZERS, batch_size=16)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0].tolist()) == list(range(len(FRAME_SOURCE)))
    for batch in batches:
        _assert_masks(batch)
        for row, i in enumerate(batch["index"].tolist()):
            n = len(FRAME_SOURCE[i]["inputs"]) if i >= 0 else 0
            assert batch["inputs_mask"][row].sum() == n
