"""The ``bible_es_en`` TFDS dataset: verse-aligned Reina-Valera 1909 / World English Bible pairs.

Built from the SWORD modules Debian installs (``apt-get install sword-text-sparv sword-text-web``)
and written as array_record, so it is built and read without TensorFlow:

    build_bible("/data/tfds")                      # or: s2s build-data bible --data-dir /data/tfds
    tfds.data_source("bible_es_en", data_dir="/data/tfds")["train"][0]
    # {"es": b"...", "en": b"...", "book": b"Gen", "chapter": 1, "verse": 1}

Examples are written in canonical verse order (no TFDS shuffling); readers shuffle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from s2s_jax.data.bible import alignment, osis, sword

_DESCRIPTION = """\
Spanish-English Bible verses: Reina-Valera 1909 (SWORD module spaRV1909eb) aligned with the World
English Bible (engWEB2015eb), both public domain. OSIS markup is cleaned to plain text; verses are
aligned by reference with a length-based correction of numbering shifts, and implausible pairs
are dropped (see docs/bible_corpus.md). Splits are by book: validation = Esther, Ecclesiastes,
Zechariah, Colossians, James; test = Ruth, Lamentations, Micah, John, Philippians; train = the
other 56 books of the Protestant canon.
"""


def read_bible(sword_path: str = sword.DEFAULT_SWORD_PATH) -> dict[str, dict[sword.VerseRef, str]]:
    """Cleaned verse texts of both modules.

    Args:
      sword_path: SWORD data directory holding ``mods.d/`` and ``modules/``.

    Returns:
      ``{"es": {ref: text}, "en": {ref: text}}``, every verse slot of each module in canonical
      order (``""`` for empty slots).

    Raises:
      SwordModuleError: if pysword or a module is missing, naming what to install.
    """
    sword.check_modules(sword_path, (sword.SPANISH_MODULE, sword.ENGLISH_MODULE))
    return {
        lang: {
            ref: osis.clean_osis(markup) for ref, markup in sword.iter_raw_verses(sword_path, name)
        }
        for lang, name in (("es", sword.SPANISH_MODULE), ("en", sword.ENGLISH_MODULE))
    }


def aligned_splits(
    sword_path: str = sword.DEFAULT_SWORD_PATH,
) -> tuple[dict[str, list[alignment.VersePair]], alignment.AlignmentStats]:
    """Reads, cleans, aligns and splits the corpus (what the builder writes)."""
    texts = read_bible(sword_path)
    pairs, stats = alignment.align_verses(texts["es"], texts["en"])
    return alignment.split_pairs(pairs), stats


class BibleEsEn(tfds.core.GeneratorBasedBuilder):
    """Verse-aligned Spanish (RV1909) -> English (WEB) Bible; registered as "bible_es_en"."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 30,897 aligned verses."}

    def __init__(self, *, sword_path: str = sword.DEFAULT_SWORD_PATH, **kwargs):
        self._sword_path = sword_path
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "es": tfds.features.Text(),
                    "en": tfds.features.Text(),
                    "book": tfds.features.Text(),  # OSIS id of the English reference, e.g. "John"
                    "chapter": tfds.features.Scalar(dtype=np.int32),
                    "verse": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("es", "en"),
            # Keep canonical verse order in the files; shuffling is the input pipeline's job.
            disable_shuffling=True,
            homepage="https://crosswire.org/sword/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is read from the locally installed SWORD modules
        splits, _ = aligned_splits(self._sword_path)
        return {name: self._generate_examples(pairs) for name, pairs in splits.items()}

    def _generate_examples(
        self, pairs: Sequence[alignment.VersePair]
    ) -> Iterator[tuple[int, dict]]:
        # Unshuffled TFDS splits need integer keys: the position in canonical order.
        for index, pair in enumerate(pairs):
            yield (
                index,
                {
                    "es": pair.es,
                    "en": pair.en,
                    "book": pair.book,
                    "chapter": pair.chapter,
                    "verse": pair.verse,
                },
            )


def build_bible(data_dir: str, sword_path: str = sword.DEFAULT_SWORD_PATH) -> dict[str, int]:
    """Builds ``bible_es_en`` into `data_dir` (a no-op when it is already there).

    Args:
      data_dir: TFDS data directory; the dataset lands in ``data_dir/bible_es_en/1.0.0``.
      sword_path: SWORD data directory holding the two modules.

    Returns:
      Number of examples per split, e.g. ``{"train": 28769, "validation": 802, "test": 1326}``.

    Raises:
      SwordModuleError: if pysword or a module is missing, naming what to install.
    """
    # Fail before TFDS creates any directory, with the install instructions.
    sword.check_modules(sword_path, (sword.SPANISH_MODULE, sword.ENGLISH_MODULE))
    builder = BibleEsEn(data_dir=data_dir, sword_path=sword_path)
    builder.download_and_prepare()
    return {name: builder.info.splits[name].num_examples for name in alignment.SPLITS}


def main(argv: Sequence[str] | None = None) -> int:
    """``s2s build-data bible``: builds the dataset and prints the split sizes as JSON."""
    parser = argparse.ArgumentParser(
        prog="s2s build-data bible", description="Build the bible_es_en TFDS dataset."
    )
    parser.add_argument("--data-dir", required=True, help="TFDS data directory to write into")
    parser.add_argument(
        "--sword-path",
        default=sword.DEFAULT_SWORD_PATH,
        help=f"SWORD directory with mods.d/ and modules/ (default {sword.DEFAULT_SWORD_PATH})",
    )
    args = parser.parse_args(argv)
    try:
        sizes = build_bible(args.data_dir, args.sword_path)
    except sword.SwordModuleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(sizes))
    return 0
