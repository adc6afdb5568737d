"""Tests for s2s_jax.evaluation.evaluate, with fake eval steps and decoders."""

import numpy as np
import pytest

from s2s_jax.config import ConfigError
from s2s_jax.data.vocab import EOS_ID, CharVocab
from s2s_jax.evaluation.evaluate import evaluate, source_length, sources_and_references

VOCAB = CharVocab("abc ")
REFS = ["ab ca bc ab cc", "cab abc bca cab"]  # >= 4 words, so 4-gram BLEU is defined
SUMS = {"loss_sum": 3.0, "correct": 4.0, "tokens": 6.0}


class _Result:
    def __init__(self, sequences):
        self.sequences = sequences  # [batch, beams, length]


def _rows(texts, length=18):
    rows = [VOCAB.encode(t) + [EOS_ID] for t in texts]
    return np.array([r + [0] * (length - len(r)) for r in rows], np.int32)


def _run(metrics, hypotheses=REFS, sources=("x", "yyy"), seen=None):
    """Evaluates one batch whose row 0 holds example 1 and row 1 example 0."""
    seen = {} if seen is None else seen
    batch = {"inputs": np.ones((2, 3), np.int32), "inputs_mask": np.ones((2, 3), bool),
             "targets": np.ones((2, 3), np.int32), "index": np.array([1, 0], np.int32)}  # fmt: skip

    def eval_step(params, model_batch):
        seen["eval_step"] = sorted(model_batch)
        return SUMS

    def decode(inputs, inputs_mask):
        seen["decode"] = (inputs.shape, inputs_mask.dtype)
        return _Result(_rows([hypotheses[1], hypotheses[0]])[:, None, :])

    examples = [{"inputs": s, "targets": r} for s, r in zip(sources, REFS, strict=True)]
    return evaluate(None, [batch], examples, eval_step=eval_step, decode=decode,
                    tgt_vocab=VOCAB, metrics=metrics)  # fmt: skip


def test_evaluate_maps_rows_and_feeds_the_model_its_keys():
    seen = {}
    result = _run(["exact_match"], seen=seen)
    assert result.hypotheses == REFS
    assert seen["eval_step"] == ["inputs", "inputs_mask", "targets"]  # no "index"
    assert seen["decode"] == ((2, 3), np.dtype(bool))
    assert result.metrics == {"loss": 0.5, "token_accuracy": 4 / 6, "exact_match": 1.0}


@pytest.mark.parametrize(
    "metrics, signatures",
    [([], []), (["ter", "bleu"], ["ter_signature", "bleu_signature"]),
     (["rougeL", "wer", "cer", "exact_match"], [])],
)  # fmt: skip
def test_evaluate_reports_exactly_the_metrics_asked_for(metrics, signatures):
    result = _run(metrics)
    assert list(result.metrics) == ["loss", "token_accuracy", *metrics]
    assert list(result.signatures) == signatures and result.by_length == {}


def test_text_metrics_score_the_hypotheses():
    result = _run(["bleu", "chrf", "ter", "wer"], hypotheses=[REFS[0], "cab abc bca"])
    assert result.metrics["bleu"] < 100.0 and result.metrics["ter"] > 0.0
    assert result.metrics["wer"] == pytest.approx(1 / 9)  # one word dropped of 5 + 4
    assert result.signatures["bleu_signature"].startswith("nrefs:1")
    perfect = _run(["bleu", "ter"])
    assert perfect.metrics["bleu"] == pytest.approx(100.0) and perfect.metrics["ter"] == 0.0


def test_by_length_only_when_asked_and_by_source_length():
    # Sources of 1 and 3 characters; only the second example (source "yyy") is wrong.
    result = _run(["exact_match_by_length"], hypotheses=[REFS[0], "cab"])
    assert result.by_length == {"1-1": (1.0, 1), "3-3": (0.0, 1)}
    assert result.metrics["exact_match/len_1-1"] == 1.0
    assert result.metrics["exact_match/len_3-3"] == 0.0
    assert "exact_match" not in result.metrics


def test_by_length_counts_frames_of_float_sources():
    frames = (np.zeros((4, 7), np.float32), np.zeros((9, 7), np.float32))
    result = _run(["exact_match_by_length"], sources=frames)
    assert result.by_length == {"4-5": (1.0, 1), "8-9": (1.0, 1)}


def test_unknown_metric_fails_before_decoding():
    seen = {}
    with pytest.raises(ConfigError, match="Did you mean chrf"):
        _run(["chfr"], seen=seen)
    assert not seen


@pytest.mark.parametrize(
    "source, length", [("abcd", 4), ("", 0), (np.zeros((5, 3), np.float32), 5)]
)
def test_source_length(source, length):
    assert source_length(source) == length


def test_sources_and_references_of_pairs_and_dicts():
    assert sources_and_references([("a", "b"), ("c", "d")]) == (["a", "c"], ["b", "d"])
    dicts = [{"inputs": "a", "targets": "b"}, {"inputs": "c", "targets": "d"}]
    assert sources_and_references(dicts) == (["a", "c"], ["b", "d"])
    assert sources_and_references([]) == ([], [])
