"""Tests for s2s_jax.evaluation.report: the results files and the log lines."""

import json

import numpy as np
import pytest

from s2s_jax.evaluation import report
from s2s_jax.evaluation.evaluate import EvalResult

RESULT = EvalResult(
    metrics={"loss": 1.5, "token_accuracy": 0.5, "bleu": 12.345, "exact_match/len_3-5": 0.25},
    hypotheses=["one", "two"],
    by_length={"3-5": (0.25, 4)},
    signatures={"bleu_signature": "nrefs:1|case:mixed|tok:13a"},
)


def test_write_results_holds_metrics_then_signatures(tmp_path):
    path = tmp_path / "eval_results.json"
    report.write_results(path, RESULT)
    saved = json.loads(path.read_text())
    assert list(saved) == [*RESULT.metrics, "bleu_signature"]
    assert saved == {**RESULT.metrics, **RESULT.signatures}
    assert [p.name for p in tmp_path.iterdir()] == ["eval_results.json"]  # no temporary left


def test_write_results_replaces_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "eval_results.json"
    path.write_text("old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(OSError):
        report.write_results(path, RESULT)
    assert path.read_text() == "old"  # a failed write never leaves half a file
    assert [p.name for p in tmp_path.iterdir()] == ["eval_results.json"]


def test_write_hypotheses_one_per_line(tmp_path):
    report.write_hypotheses(tmp_path / "hyp.txt", ["one", "two\nlines", "", "cr\rhere"])
    text = (tmp_path / "hyp.txt").read_text(encoding="utf-8")
    assert text == "one\ntwo lines\n\ncr here\n"
    report.write_hypotheses(tmp_path / "none.txt", [])
    assert (tmp_path / "none.txt").read_text() == ""


def test_format_metrics_shows_what_was_computed():
    line = report.format_metrics(RESULT)
    assert line == "loss 1.5000 token_accuracy 0.5000 bleu 12.3450 | len 3-5: 25.0% (n=4)"
    plain = EvalResult({"loss": 1.5, "token_accuracy": 0.5, "wer": 0.25}, [], {})
    assert report.format_metrics(plain) == "loss 1.5000 token_accuracy 0.5000 wer 0.2500"


def test_format_examples_marks_errors():
    text = report.format_examples([("12", "21"), ("34", "43")], ["21", "44"], 2)
    assert "[ok ] src: 12" in text and "[ERR] src: 34" in text and "hyp: 44" in text
    frames = [{"inputs": np.zeros((6, 3), np.float32), "targets": "7"}]
    assert "src: <6 frames>" in report.format_examples(frames, ["7"], 1)
