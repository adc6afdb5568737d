"""Tests for s2s_jax.data.bible.alignment on small synthetic verse maps.

Every synthetic verse carries the English reference it translates ("es Gen.2.3 xxx"), padded to a
chosen length, so a test can check both what was kept and that each pair really matches.
"""

import dataclasses

import pytest

from s2s_jax.data.bible.alignment import (
    SPLITS,
    TEST_BOOKS,
    VALIDATION_BOOKS,
    AlignConfig,
    VersePair,
    align_verses,
    median_log_ratio,
    split_of,
    split_pairs,
    verse_offsets,
)

# Varied verse lengths: a shift by one verse then changes the length ratios a lot.
_LENGTHS = (23, 81, 47, 120, 35, 66, 150, 29, 90, 55, 40, 102)
_CHAPTERS = (1, 2)


def _text(lang: str, refs: list[tuple], length: int) -> str:
    ids = "+".join(f"{b}.{c}.{v}" for b, c, v in refs)
    return f"{lang} {ids} ".ljust(length, "x")


def _length(ref) -> int:
    return _LENGTHS[(ref[2] - 1 + 5 * (ref[1] - 1)) % len(_LENGTHS)]


def _english(book: str = "Gen") -> dict:
    refs = [(book, c, v) for c in _CHAPTERS for v in range(1, 13)]
    return {r: _text("en", [r], _length(r)) for r in refs}


def _spanish_like(en: dict) -> dict:
    """A translation with the same numbering and the same lengths."""
    return {r: _text("es", [r], len(t)) for r, t in en.items()}


def _kept_refs(pairs) -> list[tuple]:
    return [(p.book, p.chapter, p.verse) for p in pairs]


def _assert_pairs_match(pairs):
    for p in pairs:
        assert f"{p.book}.{p.chapter}.{p.verse} " in p.en
        assert f"{p.book}.{p.chapter}.{p.verse}" in p.es.split()[1].split("+")


def _assert_counts_add_up(stats):
    assert stats.slots == stats.empty + stats.ambiguous + stats.excluded + stats.bad_ratio + (
        stats.kept
    )


def test_same_numbering_keeps_everything():
    en = _english()
    pairs, stats = align_verses(_spanish_like(en), en)
    assert _kept_refs(pairs) == list(en)
    assert pairs[0] == VersePair("Gen", 1, 1, _text("es", [("Gen", 1, 1)], 23), en[("Gen", 1, 1)])
    assert (stats.slots, stats.kept, stats.realigned) == (24, 24, 0)
    _assert_counts_add_up(stats)


def test_shifted_chapter_is_realigned():
    # Chapter 2 of the Spanish follows another numbering: its verse 1 is English 1:12 (whose
    # slot is empty), verse v+1 is English 2:v, and the last verse merges English 2:11 and 2:12.
    en = _english()
    merged = [("Gen", 2, 11), ("Gen", 2, 12)]
    en.update(
        {r: _text("en", [r], n) for r, n in zip(merged, (40, 60), strict=True)}
    )  # merged ratio 2.5
    es = _spanish_like(en)
    es[("Gen", 1, 12)] = ""
    es[("Gen", 2, 1)] = _text("es", [("Gen", 1, 12)], len(en[("Gen", 1, 12)]))
    for v in range(1, 11):
        es[("Gen", 2, v + 1)] = _text("es", [("Gen", 2, v)], len(en[("Gen", 2, v)]))
    es[("Gen", 2, 12)] = _text("es", merged, sum(len(en[r]) for r in merged))

    pairs, stats = align_verses(es, en)

    # 1:11 and 1:12 sit on either side of the offset change and are dropped as ambiguous; the
    # merged verse fails the length ratio against 2:11; English 2:12 has no partner left.
    expected = [("Gen", 1, v) for v in range(1, 11)] + [("Gen", 2, v) for v in range(1, 11)]
    assert _kept_refs(pairs) == expected
    _assert_pairs_match(pairs)
    assert dataclasses.astuple(stats) == (24, 1, 2, 0, 1, 20, 10)
    _assert_counts_add_up(stats)


def test_merged_verse_without_shift_is_dropped():
    en = _english()
    es = _spanish_like(en)
    merged = [("Gen", 1, 5), ("Gen", 1, 6)]  # ratio (35 + 66) / 35 = 2.9
    es[("Gen", 1, 5)] = _text("es", merged, sum(len(en[r]) for r in merged))
    es[("Gen", 1, 6)] = ""
    pairs, stats = align_verses(es, en)
    assert _kept_refs(pairs) == [r for r in en if r not in merged]
    assert (stats.empty, stats.bad_ratio, stats.kept, stats.realigned) == (1, 1, 22, 0)
    _assert_counts_add_up(stats)


def test_empty_verses_are_dropped():
    en = _english()
    es = _spanish_like(en)
    en[("Gen", 1, 3)] = ""
    es[("Gen", 2, 4)] = ""
    pairs, stats = align_verses(es, en)
    assert ("Gen", 1, 3) not in _kept_refs(pairs)
    assert ("Gen", 2, 4) not in _kept_refs(pairs)
    assert (stats.empty, stats.kept) == (2, 22)
    _assert_counts_add_up(stats)


@pytest.mark.parametrize(
    "es_length, kept",
    [(50, False), (59, False), (60, True), (100, True), (160, True), (161, False), (300, False)],
)
def test_length_ratio_band_is_inclusive(es_length, kept):
    en = _english()
    es = _spanish_like(en)
    ref = ("Gen", 1, 4)
    en[ref] = _text("en", [ref], 100)
    es[ref] = _text("es", [ref], es_length)
    pairs, stats = align_verses(es, en)
    assert (ref in _kept_refs(pairs)) == kept
    assert stats.bad_ratio == (0 if kept else 1)
    assert stats.kept == (24 if kept else 23)


def test_excluded_chapters_and_books_only_one_side_has():
    en = {**_english(), **_english("Tob")}  # a deuterocanonical book only the English has
    es = _spanish_like(_english())
    config = AlignConfig(exclude_chapters=frozenset({("Gen", 2)}))
    pairs, stats = align_verses(es, en, config)
    assert _kept_refs(pairs) == [("Gen", 1, v) for v in range(1, 13)]
    assert (stats.slots, stats.excluded, stats.kept) == (24, 12, 12)


def test_verse_offsets_follow_a_shift():
    es_lengths = [0, 10, 50, 20, 80, 30]  # Spanish verse i+1 is English verse i
    en_lengths = [10, 50, 20, 80, 30, 60]
    offsets = verse_offsets(es_lengths, en_lengths, mu=0.0, config=AlignConfig())
    assert offsets[1:] == [1, 1, 1, 1, 1]  # the empty first slot carries no evidence


def test_verse_offsets_never_shift_on_uniform_lengths():
    # Uniform poetry: lengths cannot tell a shift apart, so the path stays at offset 0.
    assert verse_offsets([40] * 8, [40] * 8, mu=0.0, config=AlignConfig()) == [0] * 8


def test_verse_offsets_stay_put_for_a_single_odd_verse():
    es_lengths = [30, 60, 20, 150, 40, 70]
    en_lengths = [30, 60, 20, 40, 40, 70]  # one verse 3.75x longer in Spanish
    assert verse_offsets(es_lengths, en_lengths, mu=0.0, config=AlignConfig()) == [0] * 6


def test_median_log_ratio_needs_overlap():
    with pytest.raises(ValueError, match="No reference has text in both"):
        median_log_ratio({("Gen", 1, 1): "a"}, {("Gen", 1, 2): "b"})


@pytest.mark.parametrize(
    "kwargs", [dict(min_ratio=0.0), dict(min_ratio=2.0, max_ratio=1.0), dict(max_offset=-1)]
)
def test_align_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        AlignConfig(**kwargs)


def test_splits_are_fixed_disjoint_book_lists():
    assert not set(VALIDATION_BOOKS) & set(TEST_BOOKS)
    assert [split_of(b) for b in ("Gen", "Esth", "John", "Rev")] == [
        "train",
        "validation",
        "test",
        "train",
    ]
    pairs = [VersePair(b, 1, 1, "es", "en") for b in ("Gen", "John", "Esth", "Exod", "Ruth")]
    splits = split_pairs(pairs)
    assert tuple(splits) == SPLITS
    assert [p.book for p in splits["train"]] == ["Gen", "Exod"]
    assert [p.book for p in splits["validation"]] == ["Esth"]
    assert [p.book for p in splits["test"]] == ["John", "Ruth"]
