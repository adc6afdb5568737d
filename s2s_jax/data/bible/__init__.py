"""A Spanish->English Bible corpus built from Debian's SWORD modules as a TFDS dataset.

osis.py cleans verse markup, sword.py reads the installed modules, alignment.py pairs verses and
splits by book, builder.py is the ``bible_es_en`` TFDS builder (array_record, no TensorFlow).
See docs/bible_corpus.md.
"""

from s2s_jax.data.bible.alignment import (
    TEST_BOOKS,
    VALIDATION_BOOKS,
    AlignConfig,
    AlignmentStats,
    VersePair,
    align_verses,
    split_of,
)
from s2s_jax.data.bible.builder import BibleEsEn, aligned_splits, build_bible, main, read_bible
from s2s_jax.data.bible.osis import clean_osis
from s2s_jax.data.bible.sword import DEFAULT_SWORD_PATH, SwordModuleError

__all__ = [
    "DEFAULT_SWORD_PATH",
    "TEST_BOOKS",
    "VALIDATION_BOOKS",
    "AlignConfig",
    "AlignmentStats",
    "BibleEsEn",
    "SwordModuleError",
    "VersePair",
    "align_verses",
    "aligned_splits",
    "build_bible",
    "clean_osis",
    "main",
    "read_bible",
    "split_of",
]
