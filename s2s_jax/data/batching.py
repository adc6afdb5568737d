"""Fixed-shape bucketed batches: deterministic, resumable training batches and exhaustive eval.

A batch is a dict of numpy int32 arrays, ``{"inputs": [batch, src_len], "targets": [batch,
tgt_len]}``, padded with PAD_ID. Every sequence ends with EOS; targets do not start with BOS (the
model shifts them right itself). Source and target lengths are bucketed independently, so a
step compiles at most ``len(buckets) ** 2`` times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from s2s_jax.data.vocab import EOS_ID, PAD_ID, Tokenizer

Example = tuple[np.ndarray, np.ndarray]
Batch = dict[str, np.ndarray]
BucketKey = tuple[int, int]  # (source width, target width)

_MULTIPLE = 4  # auto bucket boundaries are multiples of this, friendlier to tiled kernels


def encode_pairs(
    pairs: Sequence[tuple[str, str]], src_vocab: Tokenizer, tgt_vocab: Tokenizer
) -> list[Example]:
    """Encodes (source, target) strings and appends EOS to both.

    Returns:
      One `([src_len], [tgt_len])` pair of int32 arrays per input pair, EOS last.
    """
    return [
        (
            np.asarray([*src_vocab.encode(source), EOS_ID], dtype=np.int32),
            np.asarray([*tgt_vocab.encode(target), EOS_ID], dtype=np.int32),
        )
        for source, target in pairs
    ]


def auto_buckets(max_len: int, num: int = 3) -> tuple[int, ...]:
    """Evenly spaced bucket boundaries, rounded up to multiples of 4, the last >= `max_len`.

    Args:
      max_len: the longest encoded sequence (EOS included) the buckets must hold.
      num: how many boundaries; fewer are returned when rounding merges some.
    """
    if max_len < 1 or num < 1:
        raise ValueError(f"auto_buckets needs max_len >= 1 and num >= 1, got {max_len}, {num}.")
    # Integer ceil-divisions avoid float rounding pushing a boundary one multiple too far.
    spaced = (-(-max_len * (i + 1) // num) for i in range(num))
    return tuple(sorted({-(-b // _MULTIPLE) * _MULTIPLE for b in spaced}))


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    bounds = tuple(int(b) for b in buckets)
    if not bounds or bounds[0] < 1 or np.any(np.diff(bounds) <= 0):
        raise ValueError(
            f"buckets must be a non-empty, strictly increasing sequence of positive lengths, got "
            f"{tuple(buckets)!r}; e.g. (8, 16, 24) or auto_buckets(max_len)."
        )
    return bounds


def _bucket_widths(lengths: np.ndarray, bounds: tuple[int, ...], side: str) -> np.ndarray:
    too_long = np.flatnonzero(lengths > bounds[-1])
    if too_long.size:
        worst = int(lengths[too_long].max())
        raise ValueError(
            f"{too_long.size} example(s) have a {side} longer than the largest bucket "
            f"{bounds[-1]} (longest {side}: {worst} tokens with EOS, e.g. example "
            f"{int(too_long[0])}). Raise the largest bucket or filter out long examples."
        )
    return np.asarray(bounds)[np.searchsorted(bounds, lengths, side="left")]


def _group(examples: Sequence[Example], buckets: Sequence[int]) -> dict[BucketKey, np.ndarray]:
    """Example indices per (source width, target width), keys sorted, indices ascending."""
    bounds = _check_buckets(buckets)
    src_len = np.fromiter((len(s) for s, _ in examples), dtype=np.int64, count=len(examples))
    tgt_len = np.fromiter((len(t) for _, t in examples), dtype=np.int64, count=len(examples))
    src_width = _bucket_widths(src_len, bounds, "source")
    tgt_width = _bucket_widths(tgt_len, bounds, "target")
    keys = sorted(set(zip(src_width.tolist(), tgt_width.tolist(), strict=True)))
    return {
        (s, t): np.flatnonzero((src_width == s) & (tgt_width == t)).astype(np.int64)
        for s, t in keys
    }


def _pad(examples: Sequence[Example], rows: np.ndarray, key: BucketKey) -> Batch:
    """Stacks `examples[rows]` padded to `key`; a row index of -1 gives an all-PAD row."""
    inputs = np.full((len(rows), key[0]), PAD_ID, dtype=np.int32)
    targets = np.full((len(rows), key[1]), PAD_ID, dtype=np.int32)
    for r, i in enumerate(rows.tolist()):
        if i >= 0:
            source, target = examples[i]
            inputs[r, : len(source)] = source
            targets[r, : len(target)] = target
    return {"inputs": inputs, "targets": targets}


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")


def _check_rows(rows: tuple[int, int] | None, batch_size: int) -> tuple[int, int]:
    if rows is None:
        return 0, batch_size
    start, stop = (int(r) for r in rows)
    if not 0 <= start < stop <= batch_size:
        raise ValueError(
            f"rows must be (start, stop) with 0 <= start < stop <= batch_size={batch_size}, "
            f"got {tuple(rows)!r}."
        )
    return start, stop


class TrainBatches:
    """Infinite, deterministic, resumable iterator over full training batches.

    Epoch `e` draws from `np.random.default_rng([seed, e])`: it shuffles each bucket, cuts it into
    full batches (dropping that epoch's remainder), then shuffles the order of all the batches.
    Buckets holding fewer than `batch_size` examples are never used.

    Args:
      examples: `([src_len], [tgt_len])` int32 pairs ending with EOS (see `encode_pairs`).
      batch_size: rows per batch.
      buckets: strictly increasing boundaries, e.g. (8, 16, 24).
      seed: non-negative seed of the shuffles.
      rows: ``(start, stop)``: yield only these rows of every batch (default: all). In a
        multi-process run each process takes its own rows of the same global batches, which
        every process plans identically from the seed; positions (`get_state`) are global.

    Yields:
      `{"inputs": [rows, src_width], "targets": [rows, tgt_width]}` int32, widths from
      `buckets`; ``rows`` is `batch_size` unless `rows` selects fewer.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        buckets: Sequence[int],
        seed: int,
        *,
        rows: tuple[int, int] | None = None,
    ) -> None:
        _check_batch_size(batch_size)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")
        self._rows = _check_rows(rows, batch_size)
        groups = _group(examples, buckets)
        full = {key: rows for key, rows in groups.items() if len(rows) >= batch_size}
        if not full:
            largest = max((len(rows) for rows in groups.values()), default=0)
            raise ValueError(
                f"No bucket holds a full batch of {batch_size} examples (the fullest holds "
                f"{largest} of {len(examples)}). Use a smaller batch_size or more data."
            )
        # Padding every usable example once makes each batch a single gather.
        self._padded = {key: _pad(examples, rows, key) for key, rows in full.items()}
        self._batch_size = batch_size
        self._seed = seed
        self._batches_per_epoch = sum(len(rows) // batch_size for rows in full.values())
        self._epoch = 0
        self._index = 0
        self._plan: tuple[int, list[tuple[BucketKey, np.ndarray]]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Number of batches in every epoch (the same each epoch)."""
        return self._batches_per_epoch

    def _epoch_plan(self, epoch: int) -> list[tuple[BucketKey, np.ndarray]]:
        if self._plan is None or self._plan[0] != epoch:
            rng = np.random.default_rng([self._seed, epoch])
            batches = []
            for key, padded in self._padded.items():
                order = rng.permutation(len(padded["inputs"]))
                usable = len(order) // self._batch_size * self._batch_size
                batches += [
                    (key, order[i : i + self._batch_size])
                    for i in range(0, usable, self._batch_size)
                ]
            self._plan = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._plan[1]

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> Batch:
        key, rows = self._epoch_plan(self._epoch)[self._index]
        self._index += 1
        if self._index == self._batches_per_epoch:
            self._epoch, self._index = self._epoch + 1, 0
        padded = self._padded[key]
        rows = rows[self._rows[0] : self._rows[1]]
        return {name: array[rows] for name, array in padded.items()}

    def get_state(self) -> dict[str, int]:
        """The position of the next batch, JSON-serialisable: {"epoch": int, "index": int}."""
        return {"epoch": self._epoch, "index": self._index}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes at a position from `get_state` (of an iterator built with the same args).

        Raises:
          ValueError: if `state` is malformed or its index is outside the epoch.
        """
        if not isinstance(state, dict) or set(state) != {"epoch", "index"}:
            raise ValueError(f"Expected a state dict with keys 'epoch' and 'index', got {state!r}.")
        epoch, index = state["epoch"], state["index"]
        if not all(isinstance(v, (int, np.integer)) and v >= 0 for v in (epoch, index)):
            raise ValueError(f"State epoch and index must be non-negative ints, got {state!r}.")
        if index >= self._batches_per_epoch:
            raise ValueError(
                f"State index {index} is outside an epoch of {self._batches_per_epoch} batches; "
                "was it saved by an iterator with other examples, batch_size or buckets?"
            )
        self._epoch, self._index = int(epoch), int(index)


def eval_batches(
    examples: Sequence[Example], batch_size: int, buckets: Sequence[int]
) -> list[Batch]:
    """Every example exactly once, in full batches, deterministically ordered.

    Batches are ordered by (source width, target width), and examples by position within a
    bucket; each bucket's last batch is filled up with all-PAD rows.

    Returns:
      Batches `{"inputs": [batch_size, src_width], "targets": [batch_size, tgt_width],
      "index": [batch_size]}` int32, where "index" is the row's position in `examples`, -1 for
      padding rows.
    """
    _check_batch_size(batch_size)
    batches = []
    for key, rows in _group(examples, buckets).items():
        for start in range(0, len(rows), batch_size):
            index = np.full(batch_size, -1, dtype=np.int32)
            chunk = rows[start : start + batch_size]
            index[: len(chunk)] = chunk
            batches.append({**_pad(examples, index, key), "index": index})
    return batches
