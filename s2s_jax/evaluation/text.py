"""Corpus text metrics on detokenized strings: sacrebleu BLEU / chrF / TER, exact match, ROUGE.

Scores follow sacrebleu's conventions (0-100; TER is an error rate, lower is better) and come
with sacrebleu's signature strings, which say exactly how they were computed and belong next to
any reported number. ``exact_match`` is a fraction in [0, 1], like the rest of s2s_jax's metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER

DEFAULT_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class MissingDependencyError(ImportError):
    """Raised when an optional metric's package is not installed."""


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ValueError("hypotheses and references must be sequences of strings, not one string.")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"Got {len(hypotheses)} hypotheses but {len(references)} references; "
            "they must pair up one to one."
        )
    if not hypotheses:
        raise ValueError("Cannot score an empty corpus.")


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference, character for character."""
    _check_corpus(hypotheses, references)
    return float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    tokenize: str = "13a",
    rouge: bool = False,
) -> dict[str, Any]:
    """Corpus BLEU, chrF and TER (sacrebleu, one reference each), exact match, optional ROUGE.

    Args:
      hypotheses: detokenized system outputs, one string per example.
      references: the matching reference strings.
      tokenize: sacrebleu's BLEU tokenizer ("13a" is the WMT standard; "zh", "ja-mecab",
        "intl", "char", "none" ...).
      rouge: also compute ROUGE F-measures (needs the rouge-score package).

    Returns:
      {"bleu", "chrf", "ter": float 0-100, "bleu_signature", "chrf_signature",
      "ter_signature": str, "exact_match": float in [0, 1], "num_sentences": int}, plus
      "rouge1", "rouge2", "rougeL" (0-100) when `rouge`.

    Raises:
      ValueError: if the lists are empty or differ in length.
      MissingDependencyError: if `rouge` and rouge-score is not installed.
    """
    _check_corpus(hypotheses, references)
    hypotheses, references = list(hypotheses), list(references)
    scores: dict[str, Any] = {}
    for name, metric in (("bleu", BLEU(tokenize=tokenize)), ("chrf", CHRF()), ("ter", TER())):
        scores[name] = float(metric.corpus_score(hypotheses, [references]).score)
        scores[f"{name}_signature"] = str(metric.get_signature())
    scores["exact_match"] = exact_match(hypotheses, references)
    scores["num_sentences"] = len(hypotheses)
    if rouge:
        scores.update(rouge_scores(hypotheses, references))
    return scores


def _rouge_scorer_module() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise MissingDependencyError(
            "ROUGE needs the rouge-score package, which is not installed: pip install rouge-score"
        ) from e
    return rouge_scorer


def rouge_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    rouge_types: Sequence[str] = DEFAULT_ROUGE_TYPES,
) -> dict[str, float]:
    """Mean ROUGE F-measures (0-100) over the corpus, Porter-stemmed as in summarization papers.

    Raises:
      MissingDependencyError: if rouge-score is not installed (the message says what to
        install).
      ValueError: if the lists are empty or differ in length.
    """
    _check_corpus(hypotheses, references)
    scorer = _rouge_scorer_module().RougeScorer(list(rouge_types), use_stemmer=True)
    totals = dict.fromkeys(rouge_types, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        # rouge-score's argument order is (target, prediction).
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}


def format_scores(scores: Mapping[str, Any]) -> str:
    """One line for logs, e.g. ``BLEU 27.31 chrF 55.02 TER 58.40 (nrefs:1|case:mixed|...)``."""
    parts = [f"BLEU {scores['bleu']:.2f}", f"chrF {scores['chrf']:.2f}", f"TER {scores['ter']:.2f}"]
    parts += [f"{k} {scores[k]:.2f}" for k in DEFAULT_ROUGE_TYPES if k in scores]
    return " ".join(parts) + f" ({scores['bleu_signature']})"


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    # Write-then-rename: a reader (or a preempted run) never sees a half-written file.
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_scores(
    path: str | os.PathLike,
    scores: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Writes `scores` (and e.g. split, step, decoding options in `metadata`) as JSON.

    Raises:
      ValueError: if a metadata key would overwrite a score.
    """
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(scores))
    if clash:
        raise ValueError(f"metadata keys {clash} would overwrite scores; rename them.")
    _write_atomic(path, json.dumps({**scores, **metadata}, indent=2, sort_keys=True) + "\n")


def write_hypotheses(path: str | os.PathLike, hypotheses: Sequence[str]) -> None:
    """Writes one hypothesis per line (newlines inside a hypothesis become spaces)."""
    lines = [h.replace("\r", " ").replace("\n", " ") for h in hypotheses]
    _write_atomic(path, "".join(f"{line}\n" for line in lines))
