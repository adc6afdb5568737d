"""Tests for s2s_jax.data.packing."""

import grain
import numpy as np
import pytest

from s2s_jax.data.packing import (
    PACKED_KEYS,
    pack_dataset,
    pack_examples,
    shift_right_packed,
    unpack,
)
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.training.losses import shift_right


def _example(src_len, tgt_len, start=10):
    """Distinct, EOS-terminated token runs so misplaced tokens are caught."""
    source = np.arange(start, start + src_len, dtype=np.int32)
    target = np.arange(start + 100, start + 100 + tgt_len, dtype=np.int32)
    source[-1] = target[-1] = EOS_ID
    return source, target


def _random_examples(n, max_len, seed):
    rng = np.random.default_rng(seed)
    return [
        _example(int(rng.integers(1, max_len + 1)), int(rng.integers(1, max_len + 1)), 10 + 7 * i)
        for i in range(n)
    ]


def _key(example):
    return tuple(example[0].tolist()), tuple(example[1].tolist())


def _check_layout(batch):
    """Segments are contiguous runs 1..k on both sides, positions restart, padding is clean."""
    assert batch["inputs_mask"].dtype == np.bool_
    np.testing.assert_array_equal(batch["inputs_mask"], batch["inputs_segmentation"] > 0)
    for row in range(batch["inputs"].shape[0]):
        counts = []
        for side in ("inputs", "targets"):
            seg = batch[f"{side}_segmentation"][row]
            pos = batch[f"{side}_position"][row]
            k = int(seg.max())
            counts.append(k)
            assert np.all(batch[side][row][seg == 0] == PAD_ID) and np.all(pos[seg == 0] == 0)
            filled = seg[seg > 0]
            # Non-decreasing from 1 with steps of 0 or 1: each segment is one contiguous run.
            assert filled[0] == 1 and np.all(np.diff(filled) >= 0) and np.all(np.diff(filled) <= 1)
            assert np.all(seg[len(filled) :] == 0)  # all padding at the end
            for s in range(1, k + 1):
                np.testing.assert_array_equal(pos[seg == s], np.arange(np.sum(seg == s)))
        assert counts[0] == counts[1]  # source and target segments are paired


@pytest.mark.parametrize("length, seed", [(8, 0), (16, 1), ((12, 20), 2)])
def test_pack_then_unpack_is_lossless(length, seed):
    examples = _random_examples(40, 8, seed)
    batch = pack_examples(examples, length)
    assert set(batch) == set(PACKED_KEYS)
    assert all(a.dtype == np.int32 for k, a in batch.items() if k != "inputs_mask")
    src_len, tgt_len = (length, length) if isinstance(length, int) else length
    assert batch["inputs"].shape[1] == src_len and batch["targets"].shape[1] == tgt_len
    _check_layout(batch)
    assert sorted(map(_key, unpack(batch))) == sorted(map(_key, examples))
    # Packing actually shares rows: fewer rows than examples.
    assert batch["inputs"].shape[0] < len(examples)


def test_first_fit_placement_by_hand():
    examples = [_example(4, 2), _example(3, 1), _example(2, 4), _example(1, 1)]
    batch = pack_examples(examples, 6)
    # Example 1 does not fit row 0 (4 + 3 > 6); example 2 fills row 0; example 3 joins row 1.
    np.testing.assert_array_equal(
        batch["inputs_segmentation"], [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 0, 0]]
    )
    np.testing.assert_array_equal(
        batch["targets_segmentation"], [[1, 1, 2, 2, 2, 2], [1, 2, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        batch["inputs_position"], [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    )
    np.testing.assert_array_equal(batch["inputs"][1], [*examples[1][0], *examples[3][0], 0, 0])
    np.testing.assert_array_equal(batch["inputs_mask"][1], [True] * 4 + [False] * 2)
    assert [_key(e) for e in unpack(batch)] == [_key(examples[i]) for i in (0, 2, 1, 3)]


def test_target_side_also_limits_a_row():
    # Sources would share a row, but the targets (5 + 2 > 6) do not fit together.
    batch = pack_examples([_example(1, 5), _example(1, 2)], 6)
    assert batch["inputs"].shape[0] == 2


@pytest.mark.parametrize(
    "examples, length, message",
    [
        ([_example(7, 2)], 6, "Filter long examples"),
        ([(np.zeros(0, np.int32), np.ones(2, np.int32))], 6, "between 1"),
        ([_example(2, 2)], 0, "positive int"),
        ([_example(2, 2)], (4, 4, 4), "positive int"),
        ([(np.ones((2, 3), np.float32), np.ones(2, np.int32))], 6, "token ids"),
    ],
)
def test_bad_input_raises(examples, length, message):
    with pytest.raises(ValueError, match=message):
        pack_examples(examples, length)


def test_shift_right_packed_by_hand():
    targets = np.array([[5, 6, EOS_ID, 7, EOS_ID, 0], [8, EOS_ID, 0, 0, 0, 0]], dtype=np.int32)
    segmentation = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 0, 0, 0, 0]], dtype=np.int32)
    expected = [[BOS_ID, 5, 6, BOS_ID, 7, PAD_ID], [BOS_ID, 8, PAD_ID, PAD_ID, PAD_ID, PAD_ID]]
    np.testing.assert_array_equal(shift_right_packed(targets, segmentation), expected)


def test_shift_right_packed_matches_plain_shift_where_it_matters():
    examples = _random_examples(6, 7, seed=3)
    targets = np.zeros((6, 8), dtype=np.int32)
    for i, (_, target) in enumerate(examples):
        targets[i, : len(target)] = target
    segmentation = (targets != PAD_ID).astype(np.int32)
    real = targets != PAD_ID  # the loss only reads decoder inputs at real target positions
    packed = np.asarray(shift_right_packed(targets, segmentation))
    plain = np.asarray(shift_right(targets, BOS_ID))
    np.testing.assert_array_equal(packed[real], plain[real])


def _stream(examples):
    return grain.MapDataset.source(examples).map(
        lambda e: {"inputs": e[0], "targets": e[1], "index": np.int32(0)}
    )


def test_grain_packing_is_lossless_and_fixed_shape():
    examples = _random_examples(50, 8, seed=4)
    rows = list(pack_dataset(_stream(examples).to_iter_dataset(), (10, 12), num_rows=4))
    for row in rows:
        assert set(row) == set(PACKED_KEYS)
        assert row["inputs"].shape == row["inputs_mask"].shape == (10,)
        assert row["targets"].shape == (12,)
    batch = {k: np.stack([r[k] for r in rows]) for k in PACKED_KEYS}
    _check_layout(batch)
    # The stream stays in order: unpacking row by row restores it exactly.
    assert sorted(map(_key, unpack(batch))) == sorted(map(_key, examples))


def test_grain_packing_resumes_exactly():
    examples = _random_examples(50, 8, seed=5)
    dataset = pack_dataset(_stream(examples).to_iter_dataset(), 12, num_rows=3)
    full = [r["inputs"] for r in dataset]
    it = iter(dataset)
    for _ in range(5):  # mid-way through a group of 3 packed rows
        next(it)
    resumed = iter(dataset)
    resumed.set_state(it.get_state())
    rest = [r["inputs"] for r in resumed]
    assert len(rest) == len(full) - 5
    for a, b in zip(rest, full[5:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_pack_dataset_rejects_bad_rows():
    with pytest.raises(ValueError, match="num_rows"):
        pack_dataset(_stream([_example(2, 2)]).to_iter_dataset(), 4, num_rows=0)
