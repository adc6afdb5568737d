"""Fixed-shape bucketed batches: deterministic, resumable training batches and exhaustive eval.

Examples are encoded (`encode_examples`) and padded into batches of numpy arrays:

    inputs       [batch, src_len] int32 ids, EOS last, PAD_ID after; or
                 [batch, src_len, features] float32 frames (no EOS frame), 0.0 after
    inputs_mask  [batch, src_len] bool, True on real source positions
    targets      [batch, tgt_len] int32 ids, EOS last, PAD_ID after

Targets do not start with BOS (the model shifts them right itself). Source lengths (tokens with
EOS, or frames) and target lengths are bucketed independently, so a step compiles at most
``len(buckets) ** 2`` times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from s2s_jax.data.types import Batch, EncodedExample, Example
from s2s_jax.data.vocab import EOS_ID, PAD_ID, Tokenizer

BucketKey = tuple[int, int]  # (source width, target width)
# The shape of one source position: () for a token id, (features,) for a frame.
SourceLayout = tuple[int, ...]

_MULTIPLE = 4  # auto bucket boundaries are multiples of this, friendlier to tiled kernels
_TOKENS: SourceLayout = ()


def encode_source(source: str | np.ndarray, vocab: Tokenizer | None) -> np.ndarray:
    """Text -> `[len + 1]` int32 ids ending with EOS; float frames -> `[len, features]` float32.

    Raises:
      ValueError: for text without a source tokenizer, or frames that are not a non-empty
        `[length, features]` float array.
    """
    if isinstance(source, str):
        if vocab is None:
            raise ValueError(
                "A text source needs a source tokenizer, and this data has none: its sources "
                "are float frames [length, features]."
            )
        return np.asarray([*vocab.encode(source), EOS_ID], dtype=np.int32)
    frames = np.asarray(source)
    if frames.ndim != 2 or not len(frames) or not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(
            "A non-text source must be float frames [length >= 1, features], got "
            f"{frames.dtype} of shape {frames.shape}."
        )
    return frames.astype(np.float32, copy=False)


def encode_examples(
    examples: Sequence[Example], src_vocab: Tokenizer | None, tgt_vocab: Tokenizer
) -> list[EncodedExample]:
    """Encodes examples for batching (see `encode_source`); targets get EOS appended.

    Args:
      examples: ``{"inputs": text or [len, features] float frames, "targets": text}``.
      src_vocab: tokenizes text sources; None when every source is float frames.
      tgt_vocab: tokenizes the targets.

    Returns:
      One `(source, [tgt_len] int32)` pair per example.
    """
    return [
        (
            encode_source(example["inputs"], src_vocab),
            np.asarray([*tgt_vocab.encode(example["targets"]), EOS_ID], dtype=np.int32),
        )
        for example in examples
    ]


def source_layout(examples: Sequence[EncodedExample]) -> SourceLayout:
    """The shape of a source position every example shares: () for ids (and for no examples).

    Raises:
      ValueError: if sources mix token ids and frames, or frames of different sizes.
    """
    layouts = {source.shape[1:] for source, _ in examples}
    if len(layouts) > 1:
        found = sorted(str(list(shape)) for shape in layouts)
        raise ValueError(
            f"Sources mix per-position shapes {found} ([] for token ids); a dataset's sources "
            "must be all token ids or all float frames of one size."
        )
    return layouts.pop() if layouts else _TOKENS


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


def _bucket_widths(
    lengths: np.ndarray, bounds: tuple[int, ...], side: str, unit: str
) -> np.ndarray:
    too_long = np.flatnonzero(lengths > bounds[-1])
    if too_long.size:
        worst = int(lengths[too_long].max())
        raise ValueError(
            f"{too_long.size} example(s) have a {side} longer than the largest bucket "
            f"{bounds[-1]} (longest {side}: {worst} {unit}, e.g. example "
            f"{int(too_long[0])}). Raise the largest bucket or filter out long examples."
        )
    return np.asarray(bounds)[np.searchsorted(bounds, lengths, side="left")]


def _group(
    examples: Sequence[EncodedExample], buckets: Sequence[int]
) -> dict[BucketKey, np.ndarray]:
    """Example indices per (source width, target width), keys sorted, indices ascending."""
    bounds = _check_buckets(buckets)
    src_len = np.fromiter((len(s) for s, _ in examples), dtype=np.int64, count=len(examples))
    tgt_len = np.fromiter((len(t) for _, t in examples), dtype=np.int64, count=len(examples))
    tokens = source_layout(examples) == _TOKENS
    src_width = _bucket_widths(src_len, bounds, "source", "tokens with EOS" if tokens else "frames")
    tgt_width = _bucket_widths(tgt_len, bounds, "target", "tokens with EOS")
    keys = sorted(set(zip(src_width.tolist(), tgt_width.tolist(), strict=True)))
    return {
        (s, t): np.flatnonzero((src_width == s) & (tgt_width == t)).astype(np.int64)
        for s, t in keys
    }


def _pad(
    examples: Sequence[EncodedExample], rows: np.ndarray, key: BucketKey, layout: SourceLayout
) -> Batch:
    """Stacks `examples[rows]` padded to `key`; a row index of -1 gives an all-padding row."""
    if layout == _TOKENS:
        inputs = np.full((len(rows), key[0]), PAD_ID, dtype=np.int32)
    else:
        inputs = np.zeros((len(rows), key[0], *layout), dtype=np.float32)
    inputs_mask = np.zeros((len(rows), key[0]), dtype=bool)
    targets = np.full((len(rows), key[1]), PAD_ID, dtype=np.int32)
    for r, i in enumerate(rows.tolist()):
        if i >= 0:
            source, target = examples[i]
            inputs[r, : len(source)] = source
            inputs_mask[r, : len(source)] = True
            targets[r, : len(target)] = target
    return {"inputs": inputs, "inputs_mask": inputs_mask, "targets": targets}


def pad_batch(examples: Sequence[EncodedExample], key: BucketKey) -> Batch:
    """All `examples` as one batch padded to `key` = (source width, target width).

    Returns:
      ``{"inputs", "inputs_mask", "targets"}`` as in the module docstring.
    """
    rows = np.arange(len(examples))
    return _pad(examples, rows, key, source_layout(examples))


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
      examples: encoded (source, target) pairs (see `encode_examples`).
      batch_size: rows per batch.
      buckets: strictly increasing boundaries, e.g. (8, 16, 24).
      seed: non-negative seed of the shuffles.
      rows: ``(start, stop)``: yield only these rows of every batch (default: all). In a
        multi-process run each process takes its own rows of the same global batches, which
        every process plans identically from the seed; positions (`get_state`) are global.

    Yields:
      ``{"inputs", "inputs_mask", "targets"}`` (module docstring), `[rows, width, ...]` with
      widths from `buckets`; ``rows`` is `batch_size` unless `rows` selects fewer.
    """

    def __init__(
        self,
        examples: Sequence[EncodedExample],
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
        layout = source_layout(examples)
        self._padded = {key: _pad(examples, rows, key, layout) for key, rows in full.items()}
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
    examples: Sequence[EncodedExample], batch_size: int, buckets: Sequence[int]
) -> list[Batch]:
    """Every example exactly once, in full batches, deterministically ordered.

    Batches are ordered by (source width, target width), and examples by position within a
    bucket; each bucket's last batch is filled up with padding rows (mask all False).

    Returns:
      Batches ``{"inputs", "inputs_mask", "targets"}`` (module docstring) of `batch_size` rows
      plus "index": `[batch_size]` int32, the row's position in `examples`, -1 for padding rows.
    """
    _check_batch_size(batch_size)
    layout = source_layout(examples)
    batches = []
    for key, rows in _group(examples, buckets).items():
        for start in range(0, len(rows), batch_size):
            index = np.full(batch_size, -1, dtype=np.int32)
            chunk = rows[start : start + batch_size]
            index[: len(chunk)] = chunk
            batches.append({**_pad(examples, index, key, layout), "index": index})
    return batches
