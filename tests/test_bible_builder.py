"""Tests for s2s_jax.data.bible.builder (and the SWORD reader it uses) on the installed modules.

Needs `apt-get install sword-text-sparv sword-text-web` and `pip install pysword` (CI installs
both); without them the real-data tests are skipped and only the error paths run. The counts are
those documented in docs/bible_corpus.md for sword-text-sparv 2.60 and sword-text-web 426.0.
"""

import os
import sys

import pytest
import tensorflow_datasets as tfds

from s2s_jax.data.bible import alignment, builder, sword

EXPECTED_SIZES = {"train": 28769, "validation": 802, "test": 1326}
EXPECTED_STATS = alignment.AlignmentStats(
    slots=31102, empty=25, ambiguous=32, excluded=49, bad_ratio=99, kept=30897, realigned=117
)
JOHN_3_16 = {
    "es": "Porque de tal manera amó Dios al mundo, que ha dado á su Hijo unigénito, para que "
    "todo aquel que en él cree, no se pierda, mas tenga vida eterna.",
    "en": "For God so loved the world, that he gave his only born Son, that whoever believes in "
    "him should not perish, but have eternal life.",
}


def _modules_installed() -> bool:
    try:
        sword.check_modules(sword.DEFAULT_SWORD_PATH, (sword.SPANISH_MODULE, sword.ENGLISH_MODULE))
    except sword.SwordModuleError:
        return False
    return True


needs_modules = pytest.mark.skipif(
    not _modules_installed(),
    reason="needs `apt-get install sword-text-sparv sword-text-web` and `pip install pysword`",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Builds the real dataset once: (data_dir, split sizes returned by build_bible)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, builder.build_bible(data_dir)


@needs_modules
def test_split_sizes_match_documented_counts(built):
    data_dir, sizes = built
    assert sizes == EXPECTED_SIZES
    sources = tfds.data_source("bible_es_en", data_dir=data_dir)
    assert {name: len(source) for name, source in sources.items()} == EXPECTED_SIZES


@needs_modules
def test_files_are_array_record_and_builder_reads_them(built):
    data_dir, _ = built
    version_dir = os.path.join(data_dir, "bible_es_en", "1.0.0")
    shards = sorted(f for f in os.listdir(version_dir) if ".array_record-" in f)
    assert [f.split("-")[1].split(".")[0] for f in shards] == ["test", "train", "validation"]
    dataset = tfds.builder("bible_es_en", data_dir=data_dir)
    assert dataset.info.supervised_keys == ("es", "en")
    first = dataset.as_data_source(split="train")[0]  # canonical order: Genesis 1:1 first
    assert (first["book"], first["chapter"], first["verse"]) == (b"Gen", 1, 1)
    assert first["en"].decode() == "In the beginning, God created the heavens and the earth."


@needs_modules
def test_john_3_16_is_clean_in_both_languages(built):
    data_dir, _ = built
    test = tfds.data_source("bible_es_en", data_dir=data_dir, split="test")
    examples = test.__getitems__(range(len(test)))
    john = [e for e in examples if (e["book"], e["chapter"], e["verse"]) == (b"John", 3, 16)]
    assert len(john) == 1
    assert {lang: john[0][lang].decode() for lang in ("es", "en")} == JOHN_3_16


@needs_modules
def test_splits_hold_disjoint_fixed_books_and_clean_text(built):
    data_dir, _ = built
    sources = tfds.data_source("bible_es_en", data_dir=data_dir)
    books = {}
    for name, source in sources.items():
        examples = source.__getitems__(range(len(source)))
        books[name] = {e["book"].decode() for e in examples}
        for e in examples if name != "train" else examples[::50]:
            for lang in ("es", "en"):
                text = e[lang].decode()
                assert text and text == text.strip()
                assert not any(bad in text for bad in ("<", ">", "¶", "  ", "&amp;")), text
    assert books["validation"] == set(alignment.VALIDATION_BOOKS)
    assert books["test"] == set(alignment.TEST_BOOKS)
    assert len(books["train"]) == 66 - 10
    assert not books["train"] & (books["validation"] | books["test"])


@needs_modules
def test_alignment_counts_match_documented_rule():
    splits, stats = builder.aligned_splits()
    assert stats == EXPECTED_STATS
    assert {name: len(pairs) for name, pairs in splits.items()} == EXPECTED_SIZES


@needs_modules
def test_reader_decompresses_each_block_once(monkeypatch):
    from pysword import bible

    calls = []
    original = bible.ZTextModule._decompressed_text

    def counting(self, testament, buf_num):
        calls.append((testament, buf_num))
        return original(self, testament, buf_num)

    monkeypatch.setattr(bible.ZTextModule, "_decompressed_text", counting)
    verses = dict(sword.iter_raw_verses(sword.DEFAULT_SWORD_PATH, sword.SPANISH_MODULE))
    assert len(verses) == 31102  # every KJV verse slot
    assert "<w lemma=" in verses[("John", 3, 16)]
    # Each block read once: one per book, plus block 0 that the index gives empty verse slots.
    assert len(calls) == len(set(calls)) == 66 + 1


def test_missing_modules_error_says_what_to_install(tmp_path):
    data_dir = tmp_path / "tfds"
    with pytest.raises(
        sword.SwordModuleError, match="apt-get install sword-text-sparv sword-text-web"
    ):
        builder.build_bible(str(data_dir), sword_path=str(tmp_path / "no-sword"))
    assert not data_dir.exists()


def test_cli_reports_missing_modules(tmp_path, capsys):
    code = builder.main(["--data-dir", str(tmp_path), "--sword-path", str(tmp_path / "none")])
    assert code == 1
    assert "apt-get install sword-text-sparv sword-text-web" in capsys.readouterr().err


def test_missing_pysword_error_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pysword", None)  # makes `import pysword` fail
    with pytest.raises(sword.SwordModuleError, match="pip install pysword"):
        builder.build_bible(str(tmp_path), sword_path=sword.DEFAULT_SWORD_PATH)
