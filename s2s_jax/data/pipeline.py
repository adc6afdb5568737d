"""Builds a run's data from its config: vocabularies, the training stream and the eval split."""

from __future__ import annotations

from collections.abc import Sequence

from s2s_jax.data.batching import TrainBatches, auto_buckets, encode_examples, eval_batches
from s2s_jax.data.config import DataConfig
from s2s_jax.data.tasks import TaskConfig, get_task, make_splits, task_vocab
from s2s_jax.data.translation import build_translation_data
from s2s_jax.data.types import Data, EncodedExample

# Synthetic targets are exact strings: whole-sequence accuracy, overall and by source length.
TASK_METRICS = ("exact_match", "exact_match_by_length")


def task_config(data: DataConfig, seed: int) -> TaskConfig:
    return TaskConfig(
        task=data.task,
        min_length=data.min_length,
        max_length=data.max_length,
        num_train=data.num_train,
        num_eval=data.num_eval,
        seed=seed,
        noise_std=data.noise_std,
    )


def buckets_for(data: DataConfig, examples: Sequence[EncodedExample]) -> tuple[int, ...]:
    """The configured buckets, or ones covering the longest encoded source or target."""
    if data.buckets:
        return data.buckets
    return auto_buckets(max(max(len(s), len(t)) for s, t in examples))


def build_data(
    data: DataConfig,
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
      data: the run config's ``data`` section, as ``DataConfig.from_section(config.data)``.
      seed: the run seed; the task split and the shuffling derive from it.
      eval_batch_size: rows per eval batch.
      max_eval: evaluate on at most this many held-out examples (0: all).
      process_rows: ``(start, stop)``: the rows of every global training batch this process
        loads (multi-process runs); None loads whole batches. Eval data is always whole.
      workdir: the run directory (TFDS sources keep their SentencePiece models there).
      eval_split: TFDS sources: evaluate this split instead of ``data.eval_split``.
    """
    if data.source == "tfds":
        if workdir is None:
            raise ValueError("data.source=tfds needs a workdir to keep its SentencePiece models.")
        return build_translation_data(
            data, seed, workdir, eval_batch_size=eval_batch_size, max_eval=max_eval,
            eval_split=eval_split, process_rows=process_rows,
        )  # fmt: skip
    train_examples, eval_examples = make_splits(task_config(data, seed))
    if max_eval:
        eval_examples = eval_examples[:max_eval]
    task = get_task(data.task)
    tgt_vocab = task_vocab(data.task)
    src_vocab = None if task.input_features else tgt_vocab
    train_encoded = encode_examples(train_examples, src_vocab, tgt_vocab)
    eval_encoded = encode_examples(eval_examples, src_vocab, tgt_vocab)
    buckets = buckets_for(data, train_encoded + eval_encoded)
    return Data(
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        train=TrainBatches(train_encoded, data.batch_size, buckets, seed=seed, rows=process_rows),
        eval_examples=eval_examples,
        eval_batches=eval_batches(eval_encoded, eval_batch_size, buckets),
        buckets=buckets,
        default_metrics=TASK_METRICS,
        input_features=task.input_features,
    )
