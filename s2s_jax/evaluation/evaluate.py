"""Evaluation of one split: teacher-forced loss and accuracy, decoding, the chosen metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from s2s_jax.data.vocab import Tokenizer
from s2s_jax.evaluation.metrics import by_length_table, check_metric_names, compute_metrics

MODEL_KEYS = ("inputs", "inputs_mask", "targets")  # what eval_step reads of an eval batch


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]  # loss, token_accuracy, then the asked metrics' scores
    hypotheses: list[str]  # best decode per example, in eval-split order
    # "a-b" -> (exact match, count) by source length; empty unless "exact_match_by_length" asked
    by_length: dict[str, tuple[float, int]]
    signatures: dict[str, str] = dataclasses.field(default_factory=dict)  # sacrebleu signatures


def source_length(source: str | np.ndarray) -> int:
    """Characters of a text source, frames (rows) of a float-frame source ``[length, features]``."""
    return len(source) if isinstance(source, str) else int(np.shape(source)[0])


def sources_and_references(examples: Sequence) -> tuple[list, list[str]]:
    """(sources, references) of example dicts ``{"inputs", "targets"}`` or (source, ref) pairs."""
    if examples and isinstance(examples[0], dict):
        return [e["inputs"] for e in examples], [e["targets"] for e in examples]
    return [s for s, _ in examples], [r for _, r in examples]


def evaluate(
    params: Any,
    batches: Sequence[dict],
    examples: Sequence,
    *,
    eval_step: Callable,
    decode: Callable,
    tgt_vocab: Tokenizer,
    metrics: Sequence[str],
) -> EvalResult:
    """Runs teacher-forced scoring and decoding over fixed-shape eval batches, then ``metrics``.

    Loss and token accuracy are always reported; the rest are exactly the named ``metrics``
    (names of `metrics.METRICS`, e.g. ``("bleu", "chrf")``), computed on the detokenized best
    hypotheses against the references.

    Args:
      params: the parameters ``eval_step`` scores (``decode`` is already bound to them).
      batches: from ``data.batching.eval_batches``; "index" maps rows to ``examples``
        (-1: padding).
      examples: the split's example dicts ``{"inputs", "targets"}`` or (source, reference)
        pairs; sources are text or float frames ``[length, features]``.
      eval_step: ``(params, batch) -> {loss_sum, correct, tokens}`` on the batch's "inputs",
        "inputs_mask" and "targets".
      decode: ``(inputs, inputs_mask) -> DecodeResult`` whose ``sequences`` are
        ``[batch, beams, length]`` ids (e.g. ``generate.decoder``).
      tgt_vocab: turns decoded ids back into text.
      metrics: the metric names to report.

    Raises:
      ConfigError: if a metric name is unknown (checked before any decoding).
    """
    metrics = check_metric_names(metrics)
    totals = {"loss_sum": 0.0, "correct": 0.0, "tokens": 0.0}
    hypotheses = [""] * len(examples)
    for batch in batches:
        for k, v in eval_step(params, {k: batch[k] for k in MODEL_KEYS if k in batch}).items():
            totals[k] += float(v)
        sequences = np.asarray(decode(batch["inputs"], batch.get("inputs_mask")).sequences)[:, 0]
        for row, index in enumerate(np.asarray(batch["index"])):
            if index >= 0:
                hypotheses[index] = tgt_vocab.decode(sequences[row])
    sources, references = sources_and_references(examples)
    lengths = [source_length(s) for s in sources]
    scores, signatures = compute_metrics(metrics, hypotheses, references, lengths)
    by_length = {}
    if "exact_match_by_length" in metrics:
        correct = [h == r for h, r in zip(hypotheses, references, strict=True)]
        by_length = by_length_table(lengths, correct)
    tokens = max(totals["tokens"], 1.0)
    results = {"loss": totals["loss_sum"] / tokens, "token_accuracy": totals["correct"] / tokens}
    return EvalResult({**results, **scores}, hypotheses, by_length, signatures)
