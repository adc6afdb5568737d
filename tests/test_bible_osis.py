"""Tests for s2s_jax.data.bible.osis: OSIS verse markup -> plain text.

The snippets are shaped like the markup of the installed modules (spaRV1909eb, engWEB2015eb).
"""

import pytest

from s2s_jax.data.bible.osis import clean_osis

_W = '<w lemma="strong:G{}">{}</w>'
_NOTE = (
    '<note placement="foot"><reference type="annotateRef">3:16 </reference>'
    "The phrase “only born” is from the Greek word.</note>"
)


@pytest.mark.parametrize(
    "markup, expected",
    [
        # Strong's word tags: the words stay, with the spaces between them.
        (f"{_W.format(1063, 'For')} {_W.format(2316, 'God')} so", "For God so"),
        (f"{_W.format(1, 'de tal manera')} {_W.format(2, 'amó')}", "de tal manera amó"),
        # A footnote between two words stands for a word break (pysword glues "bornSon").
        (
            f'only born</q>{_NOTE}<q marker="" who="Jesus">{_W.format(5207, "Son")}, that',
            "only born Son, that",
        ),
        (f"{_W.format(430, 'God')}{_NOTE}{_W.format(1254, 'created')}", "God created"),
        # ... but not before punctuation.
        (f"{_W.format(430, 'God')}{_NOTE}, and", "God, and"),
        (f"walk’</q>{_NOTE} <q>”</q>", "walk’”"),
        ("a<note n='x'/> b", "a b"),
        # Word elements written back to back are separate words; a suffix element is not.
        (
            f'{_W.format(6635, "ejército")}<transChange type="added">se llamaba</transChange>'
            f"{_W.format(5516, 'Sísara')},",
            "ejército se llamaba Sísara,",
        ),
        (f"{_W.format(1, 'justicia')}.”</q>{_W.format(2, 'Then')} he", "justicia.” Then he"),
        ('preguntándo<transChange type="added">le</transChange>, no', "preguntándole, no"),
        # Pilcrows go.
        ("¶ Y dijo Dios", "Y dijo Dios"),
        ("dijo: ¶ Ve", "dijo: Ve"),
        ("¶", ""),
        # Section titles, speaker labels and milestones go.
        ('<title type="section">The Creation</title><w>In</w> the beginning', "In the beginning"),
        ('<speaker>Beloved</speaker> <lg sID="a"/> <l level="1" sID="b"/>Let him', "Let him"),
        ('<div type="x-milestone" subType="x-preverse" sID="pv1"/>', ""),
        # Poetry lines and list items are word boundaries, with or without spaces around them.
        ('increased!<l eID="a" level="1"/> <l level="2" sID="b"/>Many', "increased! Many"),
        ('soul,<l eID="a"/><l sID="b"/>“There', "soul, “There"),
        ('Gershom.</item><item type="x-indent-1">Of the', "Gershom. Of the"),
        ("Judah</item><item>of Benjamin", "Judah of Benjamin"),
        # Entities are decoded; whitespace is collapsed.
        ("TR &amp; NU read", "TR & NU read"),
        ("  a \n\t b  ", "a b"),
        # A module's appendix after the end-of-book marker is not part of the last verse.
        (
            'Amen.  <chapter eID="Rev.22"/><div canonical="true" eID="g1" osisID="Rev" '
            'type="book"/> <div sID="g2" type="glossary"/> <title type="main">Glossary</title> '
            "Abaddon is Hebrew for destruction.",
            "Amen.",
        ),
    ],
)
def test_clean_osis(markup, expected):
    assert clean_osis(markup) == expected


_PSALM = (
    '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="a"/>'
    '<l level="1" sID="b"/>Yahweh, how my adversaries have increased!'
)


@pytest.mark.parametrize(
    "keep, expected",
    [
        (True, "A Psalm by David. Yahweh, how my adversaries have increased!"),
        (False, "Yahweh, how my adversaries have increased!"),
    ],
)
def test_canonical_titles_are_kept_unless_asked(keep, expected):
    # RV1909 has Psalm superscriptions as plain verse text, so the English keeps them by default.
    assert clean_osis(_PSALM, keep_canonical_titles=keep) == expected


def test_non_canonical_title_dropped_even_when_keeping_canonical():
    markup = '<title type="section">Heading</title><title canonical="true">Kept</title> text'
    assert clean_osis(markup, keep_canonical_titles=True) == "Kept text"
