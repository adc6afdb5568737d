"""Tests for s2s_jax.evaluation.text, on hand-checked examples."""

import json
import math
import sys

import pytest

from s2s_jax.evaluation.text import (
    MissingDependencyError,
    corpus_scores,
    exact_match,
    format_scores,
    rouge_scores,
    write_hypotheses,
    write_scores,
)

# Hand-computed scores agree with sacrebleu up to float rounding in its log/exp arithmetic.
TOL = 1e-9

HYP = "the cat sat on the mat"
REF = "the cat sat on a mat"
# n-gram matches of HYP against REF: 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3; equal
# lengths, so no brevity penalty and BLEU is their geometric mean.
HAND_BLEU = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25


def test_identical_corpus_is_perfect():
    sentences = ["a small test", "of the metrics ."]
    scores = corpus_scores(sentences, sentences)
    assert scores["bleu"] == pytest.approx(100.0, abs=TOL)
    assert scores["chrf"] == pytest.approx(100.0, abs=TOL)
    assert scores["ter"] == 0.0
    assert scores["exact_match"] == 1.0 and scores["num_sentences"] == 2


def test_bleu_and_ter_by_hand():
    scores = corpus_scores([HYP], [REF])
    assert scores["bleu"] == pytest.approx(HAND_BLEU, abs=TOL)
    assert scores["ter"] == pytest.approx(100 / 6, abs=TOL)  # one substitution, six words
    assert scores["exact_match"] == 0.0


def test_bleu_pools_ngram_counts_over_the_corpus():
    # Adding a perfect 6-word sentence pools counts: 11/12, 8/10, 6/8, 4/6 (not an average).
    scores = corpus_scores([HYP, REF], [REF, REF])
    expected = 100 * (11 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    assert scores["bleu"] == pytest.approx(expected, abs=TOL)
    assert scores["exact_match"] == 0.5


def test_disjoint_text_scores_zero_chrf():
    assert corpus_scores(["xyz"], ["abc"])["chrf"] == 0.0


@pytest.mark.parametrize("tokenize", ["13a", "char"])
def test_signatures(tokenize):
    scores = corpus_scores([HYP], [REF], tokenize=tokenize)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|")
    assert f"tok:{tokenize}" in scores["bleu_signature"]
    assert "nc:6" in scores["chrf_signature"] and "tok:tercom" in scores["ter_signature"]
    assert all("version:" in scores[f"{m}_signature"] for m in ("bleu", "chrf", "ter"))


@pytest.mark.parametrize(
    "hyps, refs, message",
    [(["a"], ["a", "b"], "1 hypotheses but 2"), ([], [], "empty"), ("abc", "abc", "not one")],
)
def test_bad_corpora_raise(hyps, refs, message):
    with pytest.raises(ValueError, match=message):
        corpus_scores(hyps, refs)


def test_exact_match_is_strict():
    assert exact_match(["a b", "a b ", "A b"], ["a b", "a b", "a b"]) == pytest.approx(1 / 3)


def test_rouge_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match="pip install rouge-score"):
        rouge_scores([HYP], [REF])
    with pytest.raises(MissingDependencyError):
        corpus_scores([HYP], [REF], rouge=True)


def test_rouge_by_hand():
    pytest.importorskip("rouge_score")
    scores = rouge_scores(["the cat sat", "a dog"], ["the cat ran", "a dog"])
    # Sentence 1: 2 of 3 unigrams match both ways (F = 2/3); sentence 2 is perfect.
    assert scores["rouge1"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=TOL)
    assert scores["rouge2"] == pytest.approx(100 * (1 / 2 + 1) / 2, abs=TOL)


def test_write_scores_and_hypotheses(tmp_path):
    scores = corpus_scores([HYP], [REF])
    write_scores(tmp_path / "scores.json", scores, metadata={"split": "test", "beam_size": 4})
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["split"] == "test" and saved["beam_size"] == 4
    assert math.isclose(saved["bleu"], scores["bleu"]) and saved["ter_signature"]
    with pytest.raises(ValueError, match="overwrite"):
        write_scores(tmp_path / "x.json", scores, metadata={"bleu": 1.0})
    write_hypotheses(tmp_path / "hyp.txt", ["one", "two\nlines", ""])
    assert (tmp_path / "hyp.txt").read_text(encoding="utf-8") == "one\ntwo lines\n\n"


def test_format_scores():
    line = format_scores(corpus_scores([HYP], [REF]))
    assert line.startswith(f"BLEU {HAND_BLEU:.2f} chrF ")
    assert "TER 16.67" in line and "nrefs:1" in line
