"""Builds a run's data from its config: vocabularies, the training stream and the eval split."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from s2s_jax.data.batching import TrainBatches, auto_buckets, encode_pairs, eval_batches
from s2s_jax.data.tasks import TaskConfig, make_splits, task_vocab
from s2s_jax.data.translation import build_translation_data
from s2s_jax.data.vocab import CharVocab


@dataclasses.dataclass
class Data:
    src_vocab: CharVocab
    tgt_vocab: CharVocab
    train: TrainBatches  # infinite, checkpointable iterator of {inputs, targets}
    eval_pairs: list[tuple[str, str]]  # (source, reference) strings of the held-out split
    eval_batches: list[dict]  # fixed-shape batches over eval_pairs, with "index" rows
    buckets: tuple[int, ...]


def task_config(data: Mapping[str, Any], seed: int) -> TaskConfig:
    return TaskConfig(
        task=data["task"],
        min_length=data["min_length"],
        max_length=data["max_length"],
        num_train=data["num_train"],
        num_eval=data["num_eval"],
        seed=seed,
    )


def buckets_for(data: Mapping[str, Any], pairs: list[tuple[str, str]]) -> tuple[int, ...]:
    """The configured buckets, or ones covering the longest example (+1 for EOS)."""
    if data["buckets"]:
        return tuple(sorted(int(b) for b in data["buckets"]))
    longest = max(max(len(s), len(t)) for s, t in pairs) + 1
    return auto_buckets(longest)


SOURCES = ("task", "tfds")


def build_data(
    data: Mapping[str, Any],
    seed: int,
    *,
    eval_batch_size: int,
    max_eval: int = 0,
    process_rows: tuple[int, int] | None = None,
    workdir: str | None = None,
    eval_split: str | None = None,
) -> Data:
    """The run's data: a synthetic task (``data.source="task"``) or a TFDS dataset ("tfds").

    Args:
      data: the ``data`` section of the run config.
      seed: the run seed; the task split and the shuffling derive from it.
      eval_batch_size: rows per eval batch.
      max_eval: evaluate on at most this many held-out examples (0: all).
      process_rows: ``(start, stop)``: the rows of every global training batch this process
        loads (multi-process runs); None loads whole batches. Eval data is always whole.
      workdir: the run directory (TFDS sources keep their SentencePiece models there).
      eval_split: TFDS sources: evaluate this split instead of ``data.eval_split``.
    """
    if data["source"] not in SOURCES:
        raise ValueError(f"Unknown data.source {data['source']!r}; valid: {', '.join(SOURCES)}.")
    if data["source"] == "tfds":
        if workdir is None:
            raise ValueError("data.source=tfds needs a workdir to keep its SentencePiece models.")
        return build_translation_data(
            data, seed, workdir, eval_batch_size=eval_batch_size, max_eval=max_eval,
            eval_split=eval_split, process_rows=process_rows,
        )  # fmt: skip
    train_pairs, eval_pairs = make_splits(task_config(data, seed))
    if max_eval:
        eval_pairs = eval_pairs[:max_eval]
    vocab = task_vocab(data["task"])
    buckets = buckets_for(data, train_pairs + eval_pairs)
    train = TrainBatches(
        encode_pairs(train_pairs, vocab, vocab),
        data["batch_size"],
        buckets,
        seed=seed,
        rows=process_rows,
    )
    batches = eval_batches(encode_pairs(eval_pairs, vocab, vocab), eval_batch_size, buckets)
    return Data(vocab, vocab, train, eval_pairs, batches, buckets)
