"""Evaluation: teacher-forced loss and accuracy, decoded exact match, accuracy by length."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from s2s_jax.data.vocab import Tokenizer
from s2s_jax.evaluation.text import corpus_scores


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]  # loss, token_accuracy, exact_match, exact_match/len_a-b, ...
    hypotheses: list[str]  # best decode per example, in eval-split order
    by_length: dict[str, tuple[float, int]]  # "a-b" -> (exact match, count), by source length
    signatures: dict[str, str] = dataclasses.field(default_factory=dict)  # sacrebleu signatures


def length_bins(lengths: Sequence[int], num_bins: int = 4) -> list[tuple[int, int]]:
    """Splits [min(lengths), max(lengths)] into up to ``num_bins`` contiguous inclusive ranges."""
    lo, hi = min(lengths), max(lengths)
    width = max(1, math.ceil((hi - lo + 1) / num_bins))
    return [(a, min(a + width - 1, hi)) for a in range(lo, hi + 1, width)]


def exact_match_by_length(
    sources: Sequence[str], correct: Sequence[bool], num_bins: int = 4
) -> dict[str, tuple[float, int]]:
    lengths = [len(s) for s in sources]  # characters of text, frames of float arrays
    out = {}
    for a, b in length_bins(lengths, num_bins):
        hits = [c for n, c in zip(lengths, correct, strict=True) if a <= n <= b]
        if hits:
            out[f"{a}-{b}"] = (float(np.mean(hits)), len(hits))
    return out


def evaluate(
    params: Any,
    batches: Sequence[dict],
    pairs: Sequence[tuple[str, str]],
    *,
    eval_step: Callable,
    decode: Callable,
    tgt_vocab: Tokenizer,
    text_metrics: bool = False,
) -> EvalResult:
    """Runs teacher-forced scoring and decoding over fixed-shape eval batches.

    Args:
      batches: from ``data.batching.eval_batches``; "index" maps rows to ``pairs`` (-1: padding).
      pairs: (source, reference) strings of the split.
      eval_step: jitted ``(params, batch) -> {loss_sum, correct, tokens}``.
      decode: ``inputs -> DecodeResult`` for these params (e.g. ``generate.decoder``).
      text_metrics: also score the detokenized hypotheses with sacrebleu (BLEU, chrF, TER).
    """
    totals = {"loss_sum": 0.0, "correct": 0.0, "tokens": 0.0}
    hypotheses = [""] * len(pairs)
    for batch in batches:
        model_batch = {k: batch[k] for k in ("inputs", "inputs_mask", "targets")}
        for k, v in eval_step(params, model_batch).items():
            totals[k] += float(v)
        sequences = np.asarray(decode(batch["inputs"], batch["inputs_mask"]).sequences)[:, 0]
        for row, index in enumerate(np.asarray(batch["index"])):
            if index >= 0:
                hypotheses[index] = tgt_vocab.decode(sequences[row])
    sources, references = _sources_and_references(pairs)
    correct = [h == ref for h, ref in zip(hypotheses, references, strict=True)]
    by_length = exact_match_by_length(sources, correct)
    metrics = {
        "loss": totals["loss_sum"] / max(totals["tokens"], 1.0),
        "token_accuracy": totals["correct"] / max(totals["tokens"], 1.0),
        "exact_match": float(np.mean(correct)),
    }
    metrics.update({f"exact_match/len_{k}": v for k, (v, _) in by_length.items()})
    signatures = {}
    if text_metrics:
        scores = corpus_scores(hypotheses, references)
        metrics.update({k: scores[k] for k in ("bleu", "chrf", "ter")})
        signatures = {k: v for k, v in scores.items() if k.endswith("_signature")}
    return EvalResult(metrics, hypotheses, by_length, signatures)


def _sources_and_references(examples) -> tuple[list, list[str]]:
    """(sources, references) of example dicts or of (source, reference) pairs."""
    if examples and isinstance(examples[0], dict):
        return [e["inputs"] for e in examples], [e["targets"] for e in examples]
    return [s for s, _ in examples], [r for _, r in examples]


def format_examples(pairs: Sequence[tuple[str, str]], hypotheses: Sequence[str], n: int) -> str:
    """A small table of source / reference / hypothesis for the first ``n`` examples."""
    lines = []
    sources, references = _sources_and_references(pairs)
    for src, ref, hyp in list(zip(sources, references, hypotheses, strict=True))[:n]:
        if not isinstance(src, str):
            src = f"<{len(src)} frames>"
        mark = "ok " if hyp == ref else "ERR"
        lines.append(f"  [{mark}] src: {src}\n        ref: {ref}\n        hyp: {hyp}")
    return "\n".join(lines)


def format_by_length(by_length: dict[str, tuple[float, int]]) -> str:
    return "  ".join(f"len {k}: {v:.1%} (n={n})" for k, (v, n) in by_length.items())
