import numpy as np
import pytest

from s2s_jax.evaluation.evaluate import exact_match_by_length, format_examples, length_bins


def test_length_bins_cover_range():
    bins = length_bins([5, 20, 7], num_bins=4)
    assert bins == [(5, 8), (9, 12), (13, 16), (17, 20)]
    assert length_bins([3, 3]) == [(3, 3)]


def test_exact_match_by_length():
    sources = ["12", "1234", "123456", "12345678"]
    out = exact_match_by_length(sources, [True, False, True, True], num_bins=2)
    assert out == {"2-4": (0.5, 2), "5-7": (1.0, 1), "8-8": (1.0, 1)} or out == {
        "2-5": (0.5, 2),
        "6-8": (1.0, 2),
    }
    assert np.isclose(sum(v * n for v, n in out.values()), 3)


def test_format_examples_marks_errors():
    text = format_examples([("12", "21"), ("34", "43")], ["21", "44"], 2)
    assert "[ok ] src: 12" in text and "[ERR] src: 34" in text and "hyp: 44" in text


class _Result:
    def __init__(self, sequences):
        self.sequences = sequences


def _run_evaluate(hyp_ids, refs, text_metrics):
    from s2s_jax.data.vocab import CharVocab
    from s2s_jax.evaluation.evaluate import evaluate

    vocab = CharVocab("abc ")
    batch = {"inputs": np.ones((2, 3), np.int32), "targets": np.ones((2, 3), np.int32),
             "index": np.array([1, 0], np.int32)}  # fmt: skip
    sums = {"loss_sum": 3.0, "correct": 4.0, "tokens": 6.0}
    return evaluate(
        None, [batch], [("x", refs[0]), ("y", refs[1])],
        eval_step=lambda params, b: sums,
        decode=lambda inputs: _Result(np.asarray(hyp_ids)[:, None, :]),
        tgt_vocab=vocab, text_metrics=text_metrics,
    )  # fmt: skip


def test_evaluate_maps_rows_and_scores_text():
    from s2s_jax.data.vocab import CharVocab

    vocab = CharVocab("abc ")
    refs = ["ab ca bc ab cc", "cab abc bca cab"]  # >= 4 words, so 4-gram BLEU is defined
    # Row 0 holds example 1, row 1 example 0 (see "index" in _run_evaluate).
    rows = [vocab.encode(r) + [2] for r in (refs[1], refs[0])]
    rows = [r + [0] * (18 - len(r)) for r in rows]
    result = _run_evaluate(rows, refs, text_metrics=True)
    assert result.hypotheses == refs
    assert result.metrics["exact_match"] == 1.0
    assert result.metrics["loss"] == 0.5 and result.metrics["token_accuracy"] == 4 / 6
    assert result.metrics["bleu"] == pytest.approx(100.0) and result.metrics["ter"] == 0.0
    assert result.signatures["bleu_signature"].startswith("nrefs:1")
    plain = _run_evaluate(rows, refs, text_metrics=False)
    assert "bleu" not in plain.metrics and not plain.signatures
