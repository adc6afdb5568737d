"""Turning one verse of OSIS markup into plain text.

SWORD modules store each verse as an OSIS fragment: Strong's ``<w lemma=...>`` word tags,
``<note>`` footnotes, ``<title>`` headings, poetry lines (``<l>``/``<lg>``), paragraph and list
milestones, speaker labels, XML entities. pysword's own cleaner drops tags without thinking about
the spaces they stood for, so words on either side of a footnote get glued together
("only bornSon"). `clean_osis` keeps the words of the verse with correct spacing:

* Editorial additions are dropped with their content: footnotes, section headings, the speaker
  labels of the Song of Songs, and anything after the end-of-book marker (the WEB module appends
  its glossary to Revelation 22:21).
* Canonical titles (Psalm superscriptions such as "A Psalm by David") are kept by default:
  the Reina-Valera module has them as plain text in verse 1, so dropping them from the English
  side would misalign the pair.
* Tags that only mark up words (``<w>``, ``<q>``, ``<transChange>``, ...) are removed, keeping
  their text. Structural tags (lines, paragraphs, list items) and dropped elements become a word
  boundary: a single space, or nothing next to punctuation.
* Pilcrows are removed, entities are decoded, whitespace is collapsed.
"""

from __future__ import annotations

import html
import re

_BOUNDARY = "\x00"

# Word-level elements written back to back ("ejército</w><transChange>se llamaba") are separate
# words; a word-level element glued to letters ("preguntándo<transChange>le") is not touched.
_WORD_TAGS = "w|transChange|q|seg|name|hi|foreign|divineName|rdg"
_ADJACENT_WORDS = re.compile(rf"(</(?:{_WORD_TAGS})>)(?=<(?:{_WORD_TAGS})\b)")
# Everything after the end-of-book milestone is not part of the verse.
_BOOK_END = re.compile(r"<div\b[^>]*\btype=\"book\"[^>]*/>.*", re.DOTALL)
# Elements dropped with their content. None of them nests in itself in OSIS.
_NOTE = re.compile(r"<note\b[^>]*/>|<note\b.*?</note>", re.DOTALL)
_SPEAKER = re.compile(r"<speaker\b[^>]*(?<!/)>.*?</speaker>", re.DOTALL)
_TITLE = re.compile(r"<title\b([^>]*)(?<!/)>(.*?)</title>", re.DOTALL)
_CANONICAL = re.compile(r"\bcanonical=\"true\"")
# Tags that separate words when removed (poetry lines, paragraphs, lists, chapters, ...).
_STRUCTURAL = re.compile(
    r"</?(?:l|lg|lb|p|div|list|item|chapter|milestone|title|verse|head|table|row|cell)\b[^>]*>"
)
_ANY_TAG = re.compile(r"<[^>]*>")
_PILCROW = "\u00b6"
_BOUNDARIES = re.compile(rf"[\s{_BOUNDARY}]*{_BOUNDARY}[\s{_BOUNDARY}]*")
_SPACES = re.compile(r"\s+")
# A word boundary next to these characters needs no space ("word,", "“Word", "¿Qué").
_NO_SPACE_BEFORE = frozenset(",.;:!?)]’”—–")
_NO_SPACE_AFTER = frozenset("([“‘¿¡—–")


def _title(match: re.Match, keep_canonical: bool) -> str:
    if keep_canonical and _CANONICAL.search(match.group(1)):
        return f"{_BOUNDARY}{match.group(2)}{_BOUNDARY}"
    return _BOUNDARY


def _resolve_boundary(match: re.Match) -> str:
    text = match.string
    before = text[match.start() - 1] if match.start() > 0 else ""
    after = text[match.end()] if match.end() < len(text) else ""
    if not before or not after or after in _NO_SPACE_BEFORE or before in _NO_SPACE_AFTER:
        return ""
    return " "


def clean_osis(markup: str, keep_canonical_titles: bool = True) -> str:
    """Plain text of one verse of OSIS markup.

    Args:
      markup: the verse as stored in the module, e.g.
        ``'<w lemma="strong:G2316">God</w><note>...</note><w>created</w> ...'``.
      keep_canonical_titles: keep the text of ``<title canonical="true">`` (Psalm
        superscriptions); other titles are always dropped.

    Returns:
      The words and punctuation of the verse, single-spaced, without leading or trailing space;
      ``""`` when the verse has no text.
    """
    text = _BOOK_END.sub("", markup)
    text = _ADJACENT_WORDS.sub(rf"\1{_BOUNDARY}", text)
    text = _NOTE.sub(_BOUNDARY, text)
    text = _SPEAKER.sub(_BOUNDARY, text)
    text = _TITLE.sub(lambda m: _title(m, keep_canonical_titles), text)
    text = _STRUCTURAL.sub(_BOUNDARY, text)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text).replace(_PILCROW, _BOUNDARY)
    # Decide each boundary on the text around it, with dropped spans already gone.
    text = _BOUNDARIES.sub(_resolve_boundary, text.strip())
    return _SPACES.sub(" ", text).strip()
