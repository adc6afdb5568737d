import numpy as np

from s2s_jax.evaluation import exact_match_by_length, format_examples, length_bins


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
