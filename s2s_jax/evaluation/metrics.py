"""Corpus metrics on detokenized strings, by name: the registry ``eval.metrics`` chooses from.

A metric is a function ``(hypotheses, references, source_lengths) -> scores``: one hypothesis,
one reference string and the source's length (characters of text, frames of float inputs) per
example, in the same order; ``scores`` maps names to floats, and names ending in
``_signature`` to strings that say how a score was computed (sacrebleu's), which belong next to
any reported number. Metrics that do not need the lengths ignore them. Adding one is a
function here and its line in `METRICS`::

    def my_metric(hypotheses, references, source_lengths) -> Scores:
        return {"my_metric": float(...)}

Scales are each library's own: BLEU, chrF and TER 0-100 (sacrebleu; TER is an error rate,
lower is better); exact match, ROUGE F-measures and WER/CER fractions (WER/CER can pass 1 when
hypotheses run long).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence

import jiwer
import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER

from s2s_jax.config import ConfigError

Scores = dict[str, float | str]
MetricFn = Callable[[Sequence[str], Sequence[str], Sequence[int]], Scores]


def length_bins(lengths: Sequence[int], num_bins: int = 4) -> list[tuple[int, int]]:
    """Splits [min(lengths), max(lengths)] into up to ``num_bins`` contiguous inclusive ranges."""
    lo, hi = min(lengths), max(lengths)
    width = max(1, math.ceil((hi - lo + 1) / num_bins))
    return [(a, min(a + width - 1, hi)) for a in range(lo, hi + 1, width)]


def by_length_table(
    source_lengths: Sequence[int], correct: Sequence[bool], num_bins: int = 4
) -> dict[str, tuple[float, int]]:
    """``"a-b" -> (fraction correct, count)`` for sources of length a to b; empty bins left out."""
    out = {}
    for a, b in length_bins(source_lengths, num_bins):
        hits = [c for n, c in zip(source_lengths, correct, strict=True) if a <= n <= b]
        if hits:
            out[f"{a}-{b}"] = (float(np.mean(hits)), len(hits))
    return out


def _matches(hypotheses: Sequence[str], references: Sequence[str]) -> list[bool]:
    return [h == r for h, r in zip(hypotheses, references, strict=True)]


def exact_match(hypotheses, references, source_lengths) -> Scores:
    """Fraction of hypotheses equal to their reference, character for character."""
    return {"exact_match": float(np.mean(_matches(hypotheses, references)))}


def exact_match_by_length(hypotheses, references, source_lengths) -> Scores:
    """Exact match per source-length bin: ``exact_match/len_a-b`` (see `by_length_table`)."""
    table = by_length_table(source_lengths, _matches(hypotheses, references))
    return {f"exact_match/len_{k}": v for k, (v, _) in table.items()}


def _sacrebleu(name: str, metric, hypotheses, references) -> Scores:
    score = metric.corpus_score(list(hypotheses), [list(references)]).score
    return {name: float(score), f"{name}_signature": str(metric.get_signature())}


def bleu(hypotheses, references, source_lengths) -> Scores:
    """Corpus BLEU (sacrebleu, one reference, the WMT-standard "13a" tokenizer)."""
    return _sacrebleu("bleu", BLEU(tokenize="13a"), hypotheses, references)


def chrf(hypotheses, references, source_lengths) -> Scores:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2)."""
    return _sacrebleu("chrf", CHRF(), hypotheses, references)


def ter(hypotheses, references, source_lengths) -> Scores:
    """Corpus TER (sacrebleu's tercom-compatible defaults)."""
    return _sacrebleu("ter", TER(), hypotheses, references)


def _rouge(rouge_type: str, hypotheses, references) -> Scores:
    # Imported here: rouge-score imports nltk (about a second), paid only when ROUGE is asked for.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    pairs = zip(references, hypotheses, strict=True)  # rouge-score takes (target, prediction)
    return {rouge_type: float(np.mean([scorer.score(r, h)[rouge_type].fmeasure for r, h in pairs]))}


# ROUGE (the rouge-score library): the mean over sentences of each sentence's F-measure, Porter
# stemming on; rougeL is sentence-level LCS (not rougeLsum, which splits summaries on newlines).
# Its tokenizer lowercases and keeps only a-z and 0-9, so it suits English; use chrF otherwise.
def rouge1(hypotheses, references, source_lengths) -> Scores:
    """ROUGE-1: unigram overlap F-measure (see the note above on its variant)."""
    return _rouge("rouge1", hypotheses, references)


def rouge2(hypotheses, references, source_lengths) -> Scores:
    """ROUGE-2: bigram overlap F-measure."""
    return _rouge("rouge2", hypotheses, references)


def rougeL(hypotheses, references, source_lengths) -> Scores:
    """ROUGE-L: longest-common-subsequence F-measure, per sentence (not rougeLsum)."""
    return _rouge("rougeL", hypotheses, references)


def wer(hypotheses, references, source_lengths) -> Scores:
    """Corpus word error rate (jiwer): word edits over all examples / reference words."""
    return {"wer": float(jiwer.wer(list(references), list(hypotheses)))}


def cer(hypotheses, references, source_lengths) -> Scores:
    """Corpus character error rate (jiwer): character edits / reference characters."""
    return {"cer": float(jiwer.cer(list(references), list(hypotheses)))}


METRICS: dict[str, MetricFn] = {
    "exact_match": exact_match,
    "exact_match_by_length": exact_match_by_length,
    "bleu": bleu,
    "chrf": chrf,
    "ter": ter,
    "rouge1": rouge1,
    "rouge2": rouge2,
    "rougeL": rougeL,
    "wer": wer,
    "cer": cer,
}


def check_metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """Returns ``names`` as a tuple if each is in `METRICS` once.

    Raises:
      ConfigError: naming the unknown or repeated metric, with the closest valid names.
    """
    if isinstance(names, str):
        raise ConfigError(f"eval.metrics is a tuple of names; write ({names!r},), not {names!r}.")
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(str(name), list(METRICS), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"Unknown metric {name!r} in eval.metrics.{hint} Valid metrics: "
                f"{', '.join(METRICS)}."
            )
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ConfigError(f"eval.metrics names {', '.join(repeated)} more than once.")
    return tuple(names)


def compute_metrics(
    names: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    source_lengths: Sequence[int],
) -> tuple[dict[str, float], dict[str, str]]:
    """Scores a corpus with the named metrics, in the order given.

    Returns:
      (scores, signatures): the metrics' float values and their ``*_signature`` strings.

    Raises:
      ConfigError: if a name is not in `METRICS`.
      ValueError: if the corpus is empty or its three lists differ in length.
    """
    check_metric_names(names)
    _check_corpus(hypotheses, references, source_lengths)
    scores, signatures = {}, {}
    for name in names:
        for key, value in METRICS[name](hypotheses, references, source_lengths).items():
            (signatures if isinstance(value, str) else scores)[key] = value
    return scores, signatures


def _check_corpus(hypotheses, references, source_lengths) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ValueError("hypotheses and references must be sequences of strings, not one string.")
    if not len(hypotheses) == len(references) == len(source_lengths):
        raise ValueError(
            f"Got {len(hypotheses)} hypotheses, {len(references)} references and "
            f"{len(source_lengths)} source lengths; they must pair up one to one."
        )
    if not hypotheses:
        raise ValueError("Cannot score an empty corpus.")
