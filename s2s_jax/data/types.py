"""What the data layer hands to the rest of s2s_jax: examples, batches, iterators and `Data`.

An example is one source and its reference, before encoding::

    {"inputs": str | np.ndarray, "targets": str}

``inputs`` is text (tokenized by the source tokenizer) or float frames ``[length, features]``
(used as they are). Encoded, an example is a pair of arrays (`EncodedExample`), and examples
are batched into dicts of fixed-shape numpy arrays (`Batch`):

    inputs       [batch, src_len] int32 ids (PAD_ID after the end), or
                 [batch, src_len, features] float32 frames (0.0 after the end)
    inputs_mask  [batch, src_len] bool, True on real source positions: the only source of
                 lengths (decode budgets, buckets, per-length reports never count ids)
    targets      [batch, tgt_len] int32 ids ending with EOS, PAD_ID after
    index        [batch] int32 (eval batches only): the example's position, -1 for padding rows
    *_segmentation, *_position  [batch, len] int32 (packed batches only, see data.packing)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from s2s_jax.data.vocab import Tokenizer


class Example(TypedDict):
    """One source and its reference text."""

    inputs: str | np.ndarray  # text, or float frames [length, features]
    targets: str


# (source, target): [src_len] int32 ids ending with EOS, or [src_len, features] float32 frames
# (no EOS frame); [tgt_len] int32 ids ending with EOS.
EncodedExample = tuple[np.ndarray, np.ndarray]
Batch = dict[str, np.ndarray]


@runtime_checkable
class TrainIterator(Protocol):
    """An endless, checkpointable stream of training batches.

    `get_state` returns a small JSON-serialisable dict; `set_state` on an iterator built from
    the same data and settings resumes it so that it yields exactly what the saved one would.
    """

    def __next__(self) -> Batch: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


@dataclasses.dataclass
class Data:
    """A run's data, whatever its source.

    Attributes:
      src_vocab: the source tokenizer; None when sources are not tokens (float frames).
      tgt_vocab: the target tokenizer.
      train: the training batches.
      eval_examples: the held-out split (or its first ``eval.max_examples``), in order.
      eval_batches: fixed-shape batches covering ``eval_examples`` once; "index" maps rows back.
      buckets: the length buckets batches are padded to.
      default_metrics: the metrics that suit this data when the config names none.
      input_features: 0 for token sources; the size of a frame for float-frame sources.
    """

    src_vocab: Tokenizer | None
    tgt_vocab: Tokenizer
    train: TrainIterator
    eval_examples: list[Example]
    eval_batches: list[Batch]
    buckets: tuple[int, ...]
    default_metrics: tuple[str, ...] = ("exact_match",)
    input_features: int = 0
