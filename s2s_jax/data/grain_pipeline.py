"""Grain input pipelines over random-access examples: training stream and eval batches.

Training: shuffle by seed (a new order every epoch) -> repeat -> encode (text: tokens + EOS;
float frames as they are) -> drop examples longer than `max_length` -> either bucket by length
into fixed shapes or pack into fixed-length rows (token sources only) -> batches of numpy
arrays. With several processes, packing reads one shard of the source per process; bucketing
has every process plan the same global batches and keep its own rows (see
`make_train_iterator`). The returned iterator is a Grain `DatasetIterator`:
`get_state()` is a small JSON-serialisable dict and `set_state()` resumes it so that it yields
exactly the batches an uninterrupted iterator would.

Batches (PAD_ID = 0 padding, every token sequence ends with EOS, no BOS):
  bucketed: {"inputs", "inputs_mask", "targets"} as `s2s_jax.data.batching`, widths from `buckets`
  packed:   the arrays of `s2s_jax.data.packing.PACKED_KEYS`, each [batch, pack_length]
  eval:     {"inputs", "inputs_mask", "targets", "index"} as `s2s_jax.data.batching.eval_batches`
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from s2s_jax.data.batching import auto_buckets, encode_examples, eval_batches, pad_batch
from s2s_jax.data.packing import pack_dataset
from s2s_jax.data.types import Batch, Example
from s2s_jax.data.vocab import Tokenizer

Element = dict[str, Any]  # {"inputs": [src_len] or [src_len, features], "targets", "index"}
Tokenizers = tuple[Tokenizer | None, Tokenizer]  # (source: None for float frames, target)


@dataclasses.dataclass(frozen=True)
class _Encode:
    """Encodes one example and records its index (bucketing re-reads examples on resume)."""

    src: Tokenizer | None
    tgt: Tokenizer

    def __call__(self, index: int, example: Example) -> Element:
        [(source, target)] = encode_examples([example], self.src, self.tgt)
        return {"inputs": source, "targets": target, "index": index}


@dataclasses.dataclass(frozen=True)
class _FitsLength:
    max_length: int

    def __call__(self, element: Element) -> bool:
        return max(len(element["inputs"]), len(element["targets"])) <= self.max_length


@dataclasses.dataclass(frozen=True)
class _Rows:
    """This process's rows of a global batch."""

    start: int
    stop: int

    def __call__(self, batch: Batch) -> Batch:
        return {name: array[self.start : self.stop] for name, array in batch.items()}


class _BucketBatchIterator(grain.DatasetIterator):
    """Sends each example to its (source width, target width) bucket; emits a bucket when full.

    State: the parent's state plus the dataset indices of the examples waiting in each bucket,
    as a fixed-shape `[num_buckets, batch_size - 1]` list padded with -1. Restoring re-reads
    those examples from `lookup`, so the state stays small however long the sequences are.
    """

    def __init__(
        self,
        parent: grain.DatasetIterator,
        lookup: grain.MapDataset,
        bounds: tuple[int, ...],
        batch_size: int,
    ) -> None:
        super().__init__(parent)
        self._lookup = lookup
        self._bounds = np.asarray(bounds)
        self._batch_size = batch_size
        self._keys = [(s, t) for s in bounds for t in bounds]
        self._pending: dict[tuple[int, int], list[Element]] = {k: [] for k in self._keys}

    def _key(self, element: Element) -> tuple[int, int]:
        src, tgt = len(element["inputs"]), len(element["targets"])
        widths = self._bounds[np.searchsorted(self._bounds, [src, tgt], side="left")]
        return int(widths[0]), int(widths[1])

    def __next__(self) -> Batch:
        while True:
            element = next(self._parent)  # StopIteration ends a finite stream, remainder dropped
            key = self._key(element)
            waiting = self._pending[key]
            waiting.append(element)
            if len(waiting) == self._batch_size:
                self._pending[key] = []
                return _pad_batch(waiting, key)

    def get_state(self) -> dict[str, Any]:
        pending = []
        for key in self._keys:
            indices = [int(e["index"]) for e in self._pending[key]]
            pending.append(indices + [-1] * (self._batch_size - 1 - len(indices)))
        return {"parent": self._parent.get_state(), "pending": pending}

    def set_state(self, state: dict[str, Any]) -> None:
        shape = (len(state["pending"]), *{len(row) for row in state["pending"]})
        if shape != (len(self._keys), self._batch_size - 1):
            raise ValueError(
                f"Iterator state holds pending examples of shape {shape}, this pipeline expects "
                f"{(len(self._keys), self._batch_size - 1)}; was it saved with other buckets or "
                "another batch_size?"
            )
        self._parent.set_state(state["parent"])
        self._pending = {
            key: [self._lookup[i] for i in indices if i >= 0]
            for key, indices in zip(self._keys, state["pending"], strict=True)
        }


class _BucketBatchDataset(grain.IterDataset):
    def __init__(
        self,
        parent: grain.IterDataset,
        lookup: grain.MapDataset,
        bounds: tuple[int, ...],
        batch_size: int,
    ) -> None:
        super().__init__(parent)
        self._lookup = lookup
        self._bounds = bounds
        self._batch_size = batch_size

    def __iter__(self) -> _BucketBatchIterator:
        return _BucketBatchIterator(
            self._parent.__iter__(), self._lookup, self._bounds, self._batch_size
        )


def _pad_batch(elements: list[Element], key: tuple[int, int]) -> Batch:
    return pad_batch([(e["inputs"], e["targets"]) for e in elements], key)


def _check_train_args(
    num_examples: int,
    batch_size: int,
    max_length: int,
    buckets: Sequence[int] | None,
    pack_length: int | None,
    seed: int,
    shard_index: int,
    shard_count: int,
) -> None:
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}.")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
    if not 0 <= shard_index < shard_count:
        raise ValueError(
            f"Need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}; use "
            "jax.process_index() and jax.process_count()."
        )
    if num_examples < shard_count or num_examples == 0:
        raise ValueError(
            f"The source has {num_examples} examples; it needs at least one per shard "
            f"({shard_count} shards)."
        )
    if buckets is not None and pack_length is not None:
        raise ValueError("Give either buckets or pack_length, not both.")
    if buckets is not None:
        bounds = list(buckets)
        if not bounds or bounds != sorted(set(bounds)) or bounds[0] < 1 or bounds[-1] < max_length:
            raise ValueError(
                f"buckets must be strictly increasing positive lengths whose largest is >= "
                f"max_length={max_length}, got {tuple(buckets)!r}."
            )
    if pack_length is not None and pack_length < max_length:
        raise ValueError(f"pack_length={pack_length} must be >= max_length={max_length}.")


def train_dataset(
    source: Sequence[Example],
    tokenizers: Tokenizers,
    *,
    batch_size: int,
    max_length: int,
    seed: int,
    buckets: Sequence[int] | None = None,
    pack_length: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    read_threads: int = 2,
) -> grain.IterDataset:
    """The training pipeline as a Grain `IterDataset` (see `make_train_iterator`)."""
    _check_train_args(
        len(source), batch_size, max_length, buckets, pack_length, seed, shard_index, shard_count
    )
    packing = pack_length is not None
    # Packed rows have one shape everywhere, so each process can read only its own shard.
    # Bucketed shapes depend on the examples, so every process reads the whole stream, plans
    # the same global batches and keeps its own rows: all processes then agree on each step's
    # shape, as a multi-process jitted step requires.
    shard = slice(shard_index, None, shard_count) if packing else slice(None)
    examples = (
        grain.MapDataset.source(source)[shard]
        .shuffle(seed=seed)
        .repeat()  # infinite; the shuffle's order changes every epoch
        .map_with_index(_Encode(*tokenizers))
        .filter(_FitsLength(max_length))
    )
    stream = grain.experimental.WithOptionsIterDataset(
        examples.to_iter_dataset(grain.ReadOptions(num_threads=read_threads)),
        # Without this a source whose every example is too long would loop forever; with it,
        # Grain raises once 1000 consecutive examples have all been filtered out.
        grain.experimental.DatasetOptions(filter_raise_threshold_ratio=1.0),
    )
    if packing:
        rows = pack_dataset(stream, pack_length, num_rows=batch_size)
        return rows.batch(batch_size, drop_remainder=True)
    bounds = tuple(int(b) for b in buckets) if buckets is not None else auto_buckets(max_length)
    global_batches = _BucketBatchDataset(stream, examples, bounds, batch_size * shard_count)
    if shard_count == 1:
        return global_batches
    return global_batches.map(_Rows(shard_index * batch_size, (shard_index + 1) * batch_size))


def make_train_iterator(
    source: Sequence[Example],
    tokenizers: Tokenizers,
    *,
    batch_size: int,
    max_length: int,
    seed: int,
    buckets: Sequence[int] | None = None,
    pack_length: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    read_threads: int = 2,
) -> grain.DatasetIterator:
    """An infinite, deterministic, checkpointable iterator over training batches.

    Args:
      source: random-access examples, e.g. a `TranslationSource`.
      tokenizers: (source tokenizer, or None for float-frame sources; target tokenizer).
      batch_size: rows per batch (per process).
      max_length: examples whose source or target is longer (ids with EOS, or frames) are
        dropped.
      seed: shuffle seed in [0, 2**32); each epoch is a different permutation of it.
      buckets: bucket boundaries (strictly increasing, the largest >= max_length); batches are
        `[batch, bucket]` per side. Default: `auto_buckets(max_length)`.
      pack_length: pack examples into rows of this length instead of bucketing (token-id
        sources only).
      shard_index: this process's shard (`jax.process_index()`). Shards partition the data:
        with packing, shard k reads every `shard_count`-th example from k; with buckets,
        every process reads the whole stream, forms the same global batches of
        `batch_size * shard_count` rows, and keeps rows `[k * batch_size, (k+1) * batch_size)`,
        so that all processes yield the same shapes at every step.
      shard_count: number of shards (`jax.process_count()`).
      read_threads: Grain threads reading and tokenizing ahead.

    Returns:
      A Grain `DatasetIterator` yielding batches as described in the module docstring, with
      `get_state() -> dict` and `set_state(dict)`.

    Raises:
      ValueError: on inconsistent arguments (buckets and pack_length together, buckets or
        pack_length shorter than max_length, a bad shard or seed).
    """
    dataset = train_dataset(
        source,
        tokenizers,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        buckets=buckets,
        pack_length=pack_length,
        shard_index=shard_index,
        shard_count=shard_count,
        read_threads=read_threads,
    )
    return iter(dataset)


def make_eval_batches(
    source: Sequence[Example],
    tokenizers: Tokenizers,
    *,
    batch_size: int,
    buckets: Sequence[int] | None = None,
    max_examples: int = 0,
) -> list[Batch]:
    """Every example of `source` exactly once, in fixed-shape batches, in a deterministic order.

    Args:
      source: random-access examples.
      tokenizers: (source tokenizer, or None for float-frame sources; target tokenizer).
      batch_size: rows per batch; each bucket's last batch is filled with padding rows.
      buckets: bucket boundaries; default: `auto_buckets` covering the longest example, so no
        example is ever dropped.
      max_examples: use only the first this many examples (0: all).

    Returns:
      Batches ``{"inputs", "inputs_mask", "targets", "index"}`` as `batching.eval_batches`,
      where "index" is the row's position in `source` (-1 for padding rows).
    """
    count = min(len(source), max_examples) if max_examples else len(source)
    if count == 0:
        raise ValueError("make_eval_batches got an empty source.")
    examples = encode_examples([source[i] for i in range(count)], *tokenizers)
    if buckets is None:
        buckets = auto_buckets(max(max(len(s), len(t)) for s, t in examples))
    return eval_batches(examples, batch_size, buckets)
