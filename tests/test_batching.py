"""Tests for s2s_jax.data.batching."""

import json

import numpy as np
import pytest

from s2s_jax.data.batching import (
    TrainBatches,
    auto_buckets,
    encode_examples,
    eval_batches,
    pad_batch,
)
from s2s_jax.data.tasks import TaskConfig, make_splits, task_vocab
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID

BUCKETS = (4, 8, 12)
VOCAB = task_vocab("reverse")
FEATURES = 10


def _examples(num=200, seed=0, task="reverse"):
    """Examples with distinct sources (the eval split), so every row maps back to one example."""
    # Sources of length 1..10 give encoded lengths 2..11 (frames: 1..10), over every bucket.
    cfg = TaskConfig(task=task, min_length=1, max_length=10, num_train=0, num_eval=num, seed=seed)
    _, examples = make_splits(cfg)
    src_vocab = VOCAB if task == "reverse" else None
    return examples, encode_examples(examples, src_vocab, VOCAB)


def _frame_examples(num=200, seed=0):
    """noisy_digits examples: `[len, 10]` float32 frames, the target the reversed digits."""
    return _examples(num, seed, task="noisy_digits")


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
            assert x[name].dtype == y[name].dtype


def _assert_layout(array, lengths):
    """Row r holds lengths[r] tokens ending with EOS, then only PAD."""
    for row, n in zip(array, lengths, strict=True):
        assert row[n - 1] == EOS_ID
        assert np.all(row[n:] == PAD_ID)
        assert np.all((row[: n - 1] != EOS_ID) & (row[: n - 1] != PAD_ID))


def _assert_masks(batch):
    """The mask is True exactly on real source positions: `ids != PAD` or the frame count."""
    mask = batch["inputs_mask"]
    assert mask.dtype == np.bool_ and mask.shape == batch["inputs"].shape[:2]
    if batch["inputs"].ndim == 2:
        np.testing.assert_array_equal(mask, batch["inputs"] != PAD_ID)
    else:  # frames: a prefix of True, and only zeros past it
        lengths = mask.sum(axis=1)
        np.testing.assert_array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None])
        assert not batch["inputs"][~mask].any()


def test_encode_examples_appends_eos_to_text():
    [(src, tgt)] = encode_examples([{"inputs": "123", "targets": "321"}], VOCAB, VOCAB)
    assert src.dtype == np.int32 and tgt.dtype == np.int32
    assert src.tolist() == [*VOCAB.encode("123"), EOS_ID]
    assert tgt.tolist() == [*VOCAB.encode("321"), EOS_ID]
    assert tgt[0] != BOS_ID


def test_encode_examples_passes_frames_through_without_eos():
    frames = np.arange(12, dtype=np.float64).reshape(3, 4)
    [(src, tgt)] = encode_examples([{"inputs": frames, "targets": "21"}], None, VOCAB)
    assert src.dtype == np.float32 and src.shape == (3, 4)  # no EOS frame: the mask gives length
    np.testing.assert_array_equal(src, frames)
    assert tgt.tolist() == [*VOCAB.encode("21"), EOS_ID]


@pytest.mark.parametrize(
    ("source", "src_vocab", "match"),
    [
        ("123", None, "needs a source tokenizer"),
        (np.zeros(3, np.float32), None, r"float frames \[length >= 1, features\].*\(3,\)"),
        (np.zeros((0, 4), np.float32), None, "float frames"),
        (np.zeros((3, 4), np.int32), None, "int32"),
    ],
)
def test_encode_examples_rejects_bad_sources(source, src_vocab, match):
    with pytest.raises(ValueError, match=match):
        encode_examples([{"inputs": source, "targets": "1"}], src_vocab, VOCAB)


@pytest.mark.parametrize(
    ("max_len", "num", "expected"),
    [(22, 3, (8, 16, 24)), (24, 3, (8, 16, 24)), (10, 2, (8, 12)), (4, 3, (4,)), (1, 1, (4,))],
)
def test_auto_buckets(max_len, num, expected):
    assert auto_buckets(max_len, num) == expected


@pytest.mark.parametrize("max_len", [1, 7, 21, 100])
def test_auto_buckets_hold_max_len_in_multiples_of_four(max_len):
    buckets = auto_buckets(max_len)
    assert buckets[-1] >= max_len
    assert all(b % 4 == 0 for b in buckets)
    assert list(buckets) == sorted(set(buckets))


def test_train_batches_shapes_and_layout():
    raw, examples = _examples()
    batches = TrainBatches(examples, batch_size=8, buckets=BUCKETS, seed=0)
    by_source = {e["inputs"]: e["targets"] for e in raw}
    for batch in _take(batches, 40):
        assert set(batch) == {"inputs", "inputs_mask", "targets"}
        assert batch["inputs"].dtype == np.int32 and batch["targets"].dtype == np.int32
        _assert_masks(batch)
        assert batch["inputs"].shape[0] == batch["targets"].shape[0] == 8
        assert batch["inputs"].shape[1] in BUCKETS and batch["targets"].shape[1] in BUCKETS
        src_len = (batch["inputs"] != PAD_ID).sum(axis=1)
        tgt_len = (batch["targets"] != PAD_ID).sum(axis=1)
        _assert_layout(batch["inputs"], src_len)
        _assert_layout(batch["targets"], tgt_len)
        # Each row sits in its smallest bucket: it would not fit the next smaller one.
        smaller = [b for b in BUCKETS if b < batch["inputs"].shape[1]]
        assert not smaller or src_len.min() > smaller[-1]
        for src, tgt in zip(batch["inputs"], batch["targets"], strict=True):
            assert by_source[VOCAB.decode(src)] == VOCAB.decode(tgt)


def _bucket_key(example):
    return tuple(min(b for b in BUCKETS if b >= len(seq)) for seq in example)


def _epoch_sources(batches):
    epoch = _take(batches, batches.batches_per_epoch)
    return [VOCAB.decode(row) for batch in epoch for row in batch["inputs"]]


def test_epoch_uses_each_example_at_most_once_and_drops_remainders():
    _, examples = _examples()
    batches = TrainBatches(examples, batch_size=8, buckets=BUCKETS, seed=0)
    sizes = {}
    for example in examples:
        sizes[_bucket_key(example)] = sizes.get(_bucket_key(example), 0) + 1
    assert batches.batches_per_epoch == sum(n // 8 for n in sizes.values())
    first = _epoch_sources(batches)
    assert len(first) == len(set(first)) == batches.batches_per_epoch * 8
    assert batches.get_state() == {"epoch": 1, "index": 0}
    # Another shuffle drops another remainder, so other examples get used.
    assert set(_epoch_sources(batches)) != set(first)


def test_same_seed_same_batches_other_seed_differs():
    _, examples = _examples()
    a = _take(TrainBatches(examples, 8, BUCKETS, seed=5), 30)
    b = _take(TrainBatches(examples, 8, BUCKETS, seed=5), 30)
    c = _take(TrainBatches(examples, 8, BUCKETS, seed=6), 30)
    _assert_same_batches(a, b)
    assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c, strict=True))


def test_epochs_differ():
    _, examples = _examples()
    batches = TrainBatches(examples, 8, BUCKETS, seed=0)
    first = _take(batches, batches.batches_per_epoch)
    second = _take(batches, batches.batches_per_epoch)
    flat = lambda epoch: np.concatenate([b["inputs"].ravel() for b in epoch])
    assert not np.array_equal(flat(first), flat(second))


@pytest.mark.parametrize("consumed", [0, 3, 17, 25, 60])
def test_resume_matches_uninterrupted_run(consumed):
    _, examples = _examples()
    original = TrainBatches(examples, 8, BUCKETS, seed=7)
    _take(original, consumed)
    state = json.loads(json.dumps(original.get_state()))
    resumed = TrainBatches(examples, 8, BUCKETS, seed=7)
    resumed.set_state(state)
    _assert_same_batches(_take(original, 30), _take(resumed, 30))


def test_process_rows_partition_the_global_batches():
    # Two "processes" each load half the rows; together they rebuild the single-process batches.
    _, examples = _examples()
    whole = _take(TrainBatches(examples, 8, BUCKETS, seed=3), 40)
    halves = [TrainBatches(examples, 8, BUCKETS, seed=3, rows=r) for r in ((0, 4), (4, 8))]
    parts = [_take(h, 40) for h in halves]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts, strict=True)]
    _assert_same_batches(whole, joined)
    epoch, index = divmod(40, halves[0].batches_per_epoch)
    assert halves[0].get_state() == halves[1].get_state() == {"epoch": epoch, "index": index}


@pytest.mark.parametrize("rows", [(0, 0), (4, 2), (-1, 4), (0, 9)])
def test_bad_rows_raise(rows):
    _, examples = _examples()
    with pytest.raises(ValueError, match="rows must be"):
        TrainBatches(examples, 8, BUCKETS, seed=0, rows=rows)


def test_state_counts_position():
    _, examples = _examples()
    batches = TrainBatches(examples, 8, BUCKETS, seed=0)
    assert batches.get_state() == {"epoch": 0, "index": 0}
    _take(batches, batches.batches_per_epoch + 2)
    assert batches.get_state() == {"epoch": 1, "index": 2}


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"epoch": 0}, "keys 'epoch' and 'index'"),
        ({"epoch": -1, "index": 0}, "non-negative ints"),
        ({"epoch": 0, "index": 1.5}, "non-negative ints"),
        ({"epoch": 0, "index": 10_000}, "outside an epoch"),
    ],
)
def test_bad_state_raises(state, match):
    _, examples = _examples()
    with pytest.raises(ValueError, match=match):
        TrainBatches(examples, 8, BUCKETS, seed=0).set_state(state)


def test_no_full_batch_raises():
    _, examples = _examples(num=20)
    with pytest.raises(ValueError, match="No bucket holds a full batch of 64.*smaller batch_size"):
        TrainBatches(examples, 64, BUCKETS, seed=0)


@pytest.mark.parametrize(
    "make", [lambda ex: TrainBatches(ex, 2, (4, 8), 0), lambda ex: eval_batches(ex, 2, (4, 8))]
)
def test_too_long_example_raises(make):
    _, examples = _examples(num=50)
    with pytest.raises(
        ValueError, match=r"source longer than the largest bucket 8.*11 tokens with"
    ):
        make(examples)


@pytest.mark.parametrize("buckets", [(), (8, 4), (4, 4), (0, 4)])
def test_bad_buckets_raise(buckets):
    _, examples = _examples(num=20)
    with pytest.raises(ValueError, match="strictly increasing"):
        eval_batches(examples, 4, buckets)


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_eval_batches_cover_every_example_once(batch_size):
    raw, examples = _examples(num=150)
    batches = eval_batches(examples, batch_size, BUCKETS)
    seen = np.concatenate([b["index"] for b in batches])
    assert sorted(seen[seen >= 0].tolist()) == list(range(len(examples)))
    for batch in batches:
        assert batch["index"].dtype == np.int32
        assert batch["inputs"].shape[0] == batch_size and batch["index"].shape == (batch_size,)
        assert batch["inputs"].shape[1] in BUCKETS and batch["targets"].shape[1] in BUCKETS
        _assert_masks(batch)
        rows = zip(batch["index"], batch["inputs"], batch["targets"], strict=True)
        for i, src, tgt in rows:
            if i < 0:
                assert not src.any() and not tgt.any()  # padding rows are all PAD
            else:
                assert (VOCAB.decode(src), VOCAB.decode(tgt)) == (
                    raw[i]["inputs"],
                    raw[i]["targets"],
                )
                assert np.array_equal(src[: len(examples[i][0])], examples[i][0])


def test_eval_batches_are_deterministic_and_pad_only_last_of_bucket():
    _, examples = _examples(num=150)
    first, second = eval_batches(examples, 16, BUCKETS), eval_batches(examples, 16, BUCKETS)
    _assert_same_batches(first, second)
    shapes = [(b["inputs"].shape, b["targets"].shape) for b in first]
    for i, batch in enumerate(first):
        last_of_bucket = i + 1 == len(first) or shapes[i + 1] != shapes[i]
        if not last_of_bucket:
            assert np.all(batch["index"] >= 0)


def test_eval_batches_of_nothing_is_empty():
    assert eval_batches([], 4, BUCKETS) == []


def test_float_frame_batches_pad_with_zeros_and_mask_the_true_length():
    raw, examples = _frame_examples(num=150)
    for batch in eval_batches(examples, 16, BUCKETS):
        inputs, mask = batch["inputs"], batch["inputs_mask"]
        width = inputs.shape[1]
        assert inputs.dtype == np.float32 and inputs.shape == (16, width, FEATURES)
        assert width in BUCKETS and batch["targets"].dtype == np.int32
        _assert_masks(batch)
        smaller = max((b for b in BUCKETS if b < width), default=0)
        for row, i in enumerate(batch["index"].tolist()):
            if i < 0:
                assert not mask[row].any() and not inputs[row].any()
                continue
            n = len(raw[i]["inputs"])
            assert mask[row].sum() == n and smaller < n <= width  # frames, no EOS frame
            np.testing.assert_array_equal(inputs[row, :n], raw[i]["inputs"])
            assert VOCAB.decode(batch["targets"][row]) == raw[i]["targets"]


def test_float_frames_bucket_by_frame_count():
    # 4 frames fit bucket 4 exactly (a token source of 4 symbols would need 5 with EOS).
    frames = np.ones((4, FEATURES), np.float32)
    examples = encode_examples([{"inputs": frames, "targets": "12"}], None, VOCAB)
    [batch] = eval_batches(examples, 2, BUCKETS)
    assert batch["inputs"].shape == (2, 4, FEATURES) and batch["targets"].shape == (2, 4)
    np.testing.assert_array_equal(batch["inputs_mask"], [[True] * 4, [False] * 4])


def test_float_frame_train_batches_resume():
    _, examples = _frame_examples()
    original = TrainBatches(examples, 8, BUCKETS, seed=2)
    first = _take(original, 5)
    assert all(b["inputs"].dtype == np.float32 and b["inputs"].ndim == 3 for b in first)
    for batch in first:
        _assert_masks(batch)
    resumed = TrainBatches(examples, 8, BUCKETS, seed=2)
    resumed.set_state(json.loads(json.dumps(original.get_state())))
    _assert_same_batches(_take(original, 10), _take(resumed, 10))


def test_mixed_source_layouts_raise():
    _, tokens = _examples(num=8)
    _, frames = _frame_examples(num=8)
    with pytest.raises(ValueError, match="mix per-position shapes.*all token ids or all float"):
        eval_batches(tokens + frames, 4, BUCKETS)


def test_pad_batch_stacks_examples():
    _, examples = _examples(num=3)
    batch = pad_batch(examples, (12, 12))
    assert batch["inputs"].shape == (3, 12)
    _assert_masks(batch)
