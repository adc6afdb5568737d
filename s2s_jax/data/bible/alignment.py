"""Pairing Spanish and English verses, filtering implausible pairs, and the by-book splits.

The two modules number verses differently in a few places: the Reina-Valera module follows the
Hebrew numbering in some chapters (Numbers 13 and 30, 1 Samuel 24, Hosea 12, Jonah 2: the last
verse of the previous chapter opens the chapter, so every verse is one off; parts of
1 Kings 22, 1 Chronicles 21 and 2 Chronicles 33 likewise), and the WEB's NRSVA versification has
a slot the KJV lacks (Revelation 12:18). Where one module merges two verses, a slot is empty.

The rule, applied book by book (`align_verses`):

1. Both books are laid out as sequences of verse slots in canonical order. Each Spanish slot i
   is paired with English slot ``i - d``, where the offset ``d`` is in ``[-max_offset,
   max_offset]``, is 0 by default and changes only where the verse lengths demand it: a Viterbi
   path minimises the sum over verses of ``min(|log(len_es / len_en) - mu|, cost_cap)`` (``mu``
   is the median log length ratio of the corpus) plus ``switch_penalty`` per change of offset.
   With the default penalty a shift must be supported by several consecutive verses, so
   uniformly long poetry never flips by chance.
2. A pair is dropped when either side is empty; when it is the last or the first Spanish verse
   around an offset change (that is where merged verses sit) or shares its English verse with
   another; when its English chapter is in ``exclude_chapters`` (numbering the aligner cannot
   follow); or when ``len(es) / len(en)`` (characters) is outside ``[min_ratio, max_ratio]``.

Every kept pair is identified by its English (WEB) reference.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from s2s_jax.data.bible.sword import VerseRef

# In Job 39-40 the Reina-Valera module follows the Hebrew division (its 39:1-3 are English
# 38:39-41, its 40:1 is English 40:6, with merged verses between): offsets of 3 to 5 verses in
# uniform poetry, which lengths cannot place reliably. Both chapters are left out.
MISNUMBERED_CHAPTERS = frozenset({("Job", 39), ("Job", 40)})

# Fixed by-book splits (OSIS ids); every other book both modules have is training data. Books
# with a numbering shift are kept out of evaluation so references stay exactly aligned.
VALIDATION_BOOKS = ("Esth", "Eccl", "Zech", "Col", "Jas")
TEST_BOOKS = ("Ruth", "Lam", "Mic", "John", "Phil")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """How verses are paired and filtered (see the module docstring for the rule).

    Attributes:
      min_ratio: smallest kept ``len(es) / len(en)``; below it the Spanish side is missing text.
      max_ratio: largest kept ``len(es) / len(en)``; above it the Spanish side has extra text
        (typically a merged verse). The band is about a factor 1.6 either side of the median
        ratio, 0.96.
      max_offset: largest verse offset the aligner considers.
      switch_penalty: cost of changing the offset, in units of absolute log length ratio.
      cost_cap: the most one verse can add to a path, so one odd verse cannot force a shift.
      missing_cost: cost of pairing a Spanish verse with an empty or non-existent English slot.
      exclude_chapters: English (book, chapter) pairs whose verses are all dropped.
    """

    min_ratio: float = 0.6
    max_ratio: float = 1.6
    max_offset: int = 1
    switch_penalty: float = 1.5
    cost_cap: float = 1.5
    missing_cost: float = 0.5
    exclude_chapters: frozenset[tuple[str, int]] = MISNUMBERED_CHAPTERS

    def __post_init__(self):
        if not 0 < self.min_ratio < self.max_ratio:
            raise ValueError(
                f"Need 0 < min_ratio < max_ratio, got {self.min_ratio} and {self.max_ratio}."
            )
        if self.max_offset < 0 or self.switch_penalty < 0:
            raise ValueError("max_offset and switch_penalty must be >= 0.")


@dataclasses.dataclass(frozen=True)
class VersePair:
    """One aligned verse; `book`, `chapter`, `verse` are the English (WEB) reference."""

    book: str
    chapter: int
    verse: int
    es: str
    en: str


@dataclasses.dataclass(frozen=True)
class AlignmentStats:
    """What happened to every Spanish verse slot of the shared books.

    ``slots == empty + ambiguous + excluded + bad_ratio + kept``.
    """

    slots: int
    empty: int
    ambiguous: int
    excluded: int
    bad_ratio: int
    kept: int
    realigned: int  # kept pairs whose Spanish reference differs from the English one


def _emission(es_len: int, en_len: int, mu: float, config: AlignConfig) -> float:
    if es_len == 0:
        return 0.0  # an empty Spanish slot says nothing about the offset
    if en_len == 0:
        return config.missing_cost
    return min(abs(math.log(es_len / en_len) - mu), config.cost_cap)


def verse_offsets(
    es_lengths: Sequence[int], en_lengths: Sequence[int], mu: float, config: AlignConfig
) -> list[int]:
    """Viterbi offsets: Spanish slot i pairs with English slot ``i - offsets[i]``.

    Args:
      es_lengths: `[num_es_slots]` character lengths of one book's Spanish verses (0 if empty).
      en_lengths: `[num_en_slots]` the same for the English book.
      mu: expected log length ratio, ``log(len_es / len_en)``.
      config: offsets range and costs.

    Returns:
      `[num_es_slots]` offsets; the path starts at offset 0 unless a shift pays for itself.
    """
    if not es_lengths:
        return []
    offsets = range(-config.max_offset, config.max_offset + 1)

    def emit(i: int, d: int) -> float:
        j = i - d
        return _emission(
            es_lengths[i], en_lengths[j] if 0 <= j < len(en_lengths) else 0, mu, config
        )

    cost = {d: (0.0 if d == 0 else config.switch_penalty) + emit(0, d) for d in offsets}
    backpointers = []
    for i in range(1, len(es_lengths)):
        # Ties keep the current offset, then prefer the smallest |offset|.
        best = min(offsets, key=lambda d: (cost[d], abs(d)))
        step, new_cost = {}, {}
        for d in offsets:
            switch = cost[best] + config.switch_penalty
            step[d] = d if cost[d] <= switch else best
            new_cost[d] = min(cost[d], switch) + emit(i, d)
        backpointers.append(step)
        cost = new_cost
    d = min(offsets, key=lambda d: (cost[d], abs(d)))
    path = [d]
    for step in reversed(backpointers):
        d = step[d]
        path.append(d)
    return path[::-1]


def _by_book(verses: Mapping[VerseRef, str]) -> dict[str, list[tuple[VerseRef, str]]]:
    books: dict[str, list[tuple[VerseRef, str]]] = {}
    for ref, text in verses.items():
        books.setdefault(ref[0], []).append((ref, text))
    return {book: sorted(items) for book, items in books.items()}


def median_log_ratio(es: Mapping[VerseRef, str], en: Mapping[VerseRef, str]) -> float:
    """Median ``log(len_es / len_en)`` over references where both verses have text."""
    ratios = [math.log(len(es[r]) / len(en[r])) for r in es if es[r] and en.get(r)]
    if not ratios:
        raise ValueError("No reference has text in both languages; nothing can be aligned.")
    return statistics.median(ratios)


def _pair_book(es_items, en_items, mu: float, config: AlignConfig):
    """Candidate (es_ref, en_ref, es, en) pairs of one book, and how many were ambiguous."""
    es_texts = [text for _, text in es_items]
    offsets = verse_offsets([len(t) for t in es_texts], [len(t) for _, t in en_items], mu, config)
    targets = [i - d for i, d in enumerate(offsets)]
    present = [i for i, t in enumerate(es_texts) if t and 0 <= targets[i] < len(en_items)]
    # Merged verses sit where the offset changes: distrust the verse on either side of it.
    ambiguous = set()
    for a, b in itertools.pairwise(present):
        if offsets[a] != offsets[b]:
            ambiguous.update((a, b))
    claims: dict[int, int] = {}
    for i in present:
        claims[targets[i]] = claims.get(targets[i], 0) + 1
    ambiguous.update(i for i in present if claims[targets[i]] > 1)
    pairs = [
        (es_items[i][0], en_items[targets[i]][0], es_texts[i], en_items[targets[i]][1])
        for i in present
        if i not in ambiguous
    ]
    return pairs, len(ambiguous)


def align_verses(
    es: Mapping[VerseRef, str], en: Mapping[VerseRef, str], config: AlignConfig = AlignConfig()
) -> tuple[list[VersePair], AlignmentStats]:
    """Aligns two Bibles verse by verse over the books both have.

    Args:
      es: Spanish verse texts by reference (cleaned; ``""`` for empty slots).
      en: English verse texts by reference.
      config: alignment and filtering settings.

    Returns:
      The kept pairs in canonical order (books in the order of `es`) and the counts of what was
      dropped and why.
    """
    mu = median_log_ratio(es, en)
    es_books, en_books = _by_book(es), _by_book(en)
    kept: list[VersePair] = []
    counts = dict(slots=0, ambiguous=0, excluded=0, bad_ratio=0, realigned=0)
    for book, es_items in es_books.items():
        if book not in en_books:
            continue
        counts["slots"] += len(es_items)
        pairs, ambiguous = _pair_book(es_items, en_books[book], mu, config)
        counts["ambiguous"] += ambiguous
        for es_ref, en_ref, es_text, en_text in pairs:
            if not en_text:
                continue
            if en_ref[:2] in config.exclude_chapters:
                counts["excluded"] += 1
            elif not config.min_ratio <= len(es_text) / len(en_text) <= config.max_ratio:
                counts["bad_ratio"] += 1
            else:
                kept.append(VersePair(*en_ref, es=es_text, en=en_text))
                counts["realigned"] += es_ref != en_ref
    dropped = counts["ambiguous"] + counts["excluded"] + counts["bad_ratio"]
    stats = AlignmentStats(empty=counts["slots"] - dropped - len(kept), kept=len(kept), **counts)
    return kept, stats


def split_of(book: str) -> str:
    """The split ("train", "validation" or "test") a book belongs to."""
    if book in VALIDATION_BOOKS:
        return "validation"
    if book in TEST_BOOKS:
        return "test"
    return "train"


def split_pairs(pairs: Iterable[VersePair]) -> dict[str, list[VersePair]]:
    """Groups pairs by the split of their book, keeping their order."""
    splits: dict[str, list[VersePair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        splits[split_of(pair.book)].append(pair)
    return splits
