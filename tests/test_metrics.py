"""Tests for s2s_jax.evaluation.metrics: each metric on hand-checked and library examples."""

import pytest

from s2s_jax.config import ConfigError, apply_overrides, base_config, load_experiment
from s2s_jax.evaluation import metrics as M

# Hand-computed scores agree with the libraries up to float rounding in their arithmetic.
TOL = 1e-9

HYP = "the cat sat on the mat"
REF = "the cat sat on a mat"
# n-gram matches of HYP against REF: 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3; equal
# lengths, so no brevity penalty and BLEU is their geometric mean.
HAND_BLEU = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25

# rouge-score's README / RougeScorer docstring example (target, prediction).
ROUGE_TARGET = "The quick brown fox jumps over the lazy dog"
ROUGE_PREDICTION = "The quick brown dog jumps on the log."


def score(name, hypotheses, references, lengths=None):
    lengths = lengths or [len(r) for r in references]
    return M.METRICS[name](hypotheses, references, lengths)


def test_exact_match_is_strict():
    hyps, refs = ["a b", "a b ", "A b"], ["a b", "a b", "a b"]
    assert score("exact_match", hyps, refs) == {"exact_match": pytest.approx(1 / 3)}


def test_length_bins_cover_range():
    assert M.length_bins([5, 20, 7], num_bins=4) == [(5, 8), (9, 12), (13, 16), (17, 20)]
    assert M.length_bins([3, 3]) == [(3, 3)]


def test_exact_match_by_length_bins_sources_not_references():
    hyps = ["a", "x", "c", "d"]
    refs = ["a", "b", "c", "d"]  # all the same length: the bins must come from the sources
    scores = score("exact_match_by_length", hyps, refs, lengths=[2, 4, 6, 8])
    # Four bins of width 2 over lengths 2..8; the miss ("x") has a source of length 4.
    assert scores == {"exact_match/len_2-3": 1.0, "exact_match/len_4-5": 0.0,
                      "exact_match/len_6-7": 1.0, "exact_match/len_8-8": 1.0}  # fmt: skip
    # Two bins: 2-5 (one hit, one miss), 6-8 (two hits); (fraction, count) each.
    table = M.by_length_table([2, 4, 6, 8], [True, False, True, True], num_bins=2)
    assert table == {"2-5": (0.5, 2), "6-8": (1.0, 2)}


def test_bleu_and_ter_by_hand():
    assert score("bleu", [HYP], [REF])["bleu"] == pytest.approx(HAND_BLEU, abs=TOL)
    assert score("ter", [HYP], [REF])["ter"] == pytest.approx(100 / 6, abs=TOL)  # 1 sub, 6 words


def test_bleu_pools_ngram_counts_over_the_corpus():
    # Adding a perfect 6-word sentence pools counts: 11/12, 8/10, 6/8, 4/6 (not an average).
    expected = 100 * (11 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    assert score("bleu", [HYP, REF], [REF, REF])["bleu"] == pytest.approx(expected, abs=TOL)


def test_chrf_identical_and_disjoint():
    sentences = ["a small test", "of the metrics ."]
    assert score("chrf", sentences, sentences)["chrf"] == pytest.approx(100.0, abs=TOL)
    assert score("chrf", ["xyz"], ["abc"])["chrf"] == 0.0


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter"])
def test_sacrebleu_signatures(name):
    signature = score(name, [HYP], [REF])[f"{name}_signature"]
    assert signature.startswith("nrefs:1|case:") and "version:" in signature
    expected = {"bleu": "tok:13a", "chrf": "nc:6", "ter": "tok:tercom"}[name]
    assert expected in signature


def test_rouge_matches_the_library_example():
    # Values printed by rouge-score 0.1.2 for its own example (its docs print no numbers);
    # checked by hand: 6 of the prediction's 8 unigrams are in the 9-word target, so
    # P = 6/8, R = 6/9, F = 12/17; the LCS "the quick brown jumps the" has 5 words: F = 10/17.
    out = score("rouge1", [ROUGE_PREDICTION], [ROUGE_TARGET])
    assert out["rouge1"] == pytest.approx(0.7058823529411765, abs=TOL)
    assert out["rouge1"] == pytest.approx(12 / 17, abs=TOL)
    rouge_l = score("rougeL", [ROUGE_PREDICTION], [ROUGE_TARGET])["rougeL"]
    assert rouge_l == pytest.approx(10 / 17, abs=TOL)
    # Bigrams: "the quick", "quick brown" of 7 (prediction) and 8 (target): F = 4/15.
    rouge2 = score("rouge2", [ROUGE_PREDICTION], [ROUGE_TARGET])["rouge2"]
    assert rouge2 == pytest.approx(4 / 15, abs=TOL)


def test_rouge_by_hand_is_a_mean_of_sentence_f_measures():
    hyps, refs = ["the cat sat", "a dog"], ["the cat ran", "a dog"]
    # Sentence 1: 2 of 3 unigrams match both ways (F = 2/3), 1 of 2 bigrams; sentence 2 perfect.
    assert score("rouge1", hyps, refs)["rouge1"] == pytest.approx((2 / 3 + 1) / 2, abs=TOL)
    assert score("rouge2", hyps, refs)["rouge2"] == pytest.approx((1 / 2 + 1) / 2, abs=TOL)
    # Porter stemming is on: "cats"/"cat" and "running"/"runs" match.
    assert score("rouge1", ["cats running"], ["cat runs"])["rouge1"] == 1.0


def test_wer_and_cer_match_jiwer_readme():
    # jiwer's README: reference "hello world", hypothesis "hello duck": one word substituted of
    # two (WER 1/2); "world" -> "duck" is 5 character edits over 11 characters (CER 5/11).
    assert score("wer", ["hello duck"], ["hello world"]) == {"wer": 0.5}
    assert score("cer", ["hello duck"], ["hello world"])["cer"] == pytest.approx(5 / 11, abs=TOL)


def test_wer_and_cer_are_corpus_level_by_hand():
    # Word edits: 1 (sub) + 1 (deletion of "monthy") over 2 + 4 reference words = 2/6, not the
    # mean of the sentences' rates (1/2 + 1/4) / 2.
    hyps, refs = ["hello duck", "i like python"], ["hello world", "i like monthy python"]
    assert score("wer", hyps, refs)["wer"] == pytest.approx(2 / 6, abs=TOL)
    # Characters: "ab" for "abc" is 1 edit of 3, "xy" for "xy" none: 1/5 over the corpus.
    assert score("cer", ["ab", "xy"], ["abc", "xy"])["cer"] == pytest.approx(1 / 5, abs=TOL)


def test_compute_metrics_reports_exactly_the_names_asked():
    scores, signatures = M.compute_metrics(["ter", "exact_match"], [HYP], [REF], [6])
    assert list(scores) == ["ter", "exact_match"]
    assert list(signatures) == ["ter_signature"]
    assert M.compute_metrics([], [HYP], [REF], [6]) == ({}, {})


@pytest.mark.parametrize("name", sorted(M.METRICS))
def test_every_metric_returns_floats_or_signatures(name):
    out = M.METRICS[name]([HYP, REF], [REF, REF], [6, 6])
    assert out and all(
        isinstance(v, float) or (k.endswith("_signature") and isinstance(v, str))
        for k, v in out.items()
    )


@pytest.mark.parametrize(
    "names, words",
    [
        (("blue",), "Unknown metric 'blue' in eval.metrics. Did you mean bleu?"),
        (("rouge_l",), "Did you mean rougeL"),
        (("perplexity",), "Valid metrics: exact_match, exact_match_by_length, bleu"),
        ("bleu", "write ('bleu',)"),
        (("bleu", "chrf", "bleu"), "names bleu more than once"),
    ],
)
def test_bad_names_are_config_errors(names, words):
    with pytest.raises(ConfigError) as info:
        M.check_metric_names(names)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "hyps, refs, lengths, message",
    [
        (["a"], ["a", "b"], [1, 1], "1 hypotheses, 2 references"),
        ([], [], [], "empty"),
        ("abc", "abc", [1, 1, 1], "not one string"),
    ],
)
def test_bad_corpora_raise(hyps, refs, lengths, message):
    with pytest.raises(ValueError, match=message):
        M.compute_metrics(["exact_match"], hyps, refs, lengths)


def test_data_defaults_are_registered_names():
    from s2s_jax.data.pipeline import TASK_METRICS
    from s2s_jax.data.translation import METRICS as TRANSLATION_METRICS

    assert M.check_metric_names(TASK_METRICS) == ("exact_match", "exact_match_by_length")
    assert M.check_metric_names(TRANSLATION_METRICS) == ("bleu", "chrf", "ter", "exact_match")
    assert base_config().eval.metrics == ()


def test_run_metrics_come_from_the_config_or_the_data():
    from s2s_jax.run.components import build

    config = load_experiment("experiments/reverse_attention.py", "tiny")
    assert build(config).metrics == ("exact_match", "exact_match_by_length")
    chosen = apply_overrides(config, [("eval.metrics", "('chrf', 'exact_match')")])
    assert build(chosen).metrics == ("chrf", "exact_match")


def test_a_metric_typo_fails_when_the_run_is_built(monkeypatch):
    from s2s_jax.run import components

    def no_data(*args, **kwargs):
        raise AssertionError("data was built before the metric names were checked")

    monkeypatch.setattr(components, "build_data", no_data)
    config = apply_overrides(base_config(), [("eval.metrics", "('bleu', 'rouge-l')")])
    with pytest.raises(ConfigError, match="Did you mean rougeL"):
        components.build(config)
