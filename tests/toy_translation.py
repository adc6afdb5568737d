"""A tiny es->en TFDS translation dataset built locally (array_record), for tests.

Sentences come from a small word-for-word grammar, so a tiny model can learn something on it.
"""

import numpy as np
import tensorflow_datasets as tfds

NAME = "toy_es_en"
SIZES = {"train": 400, "validation": 40, "test": 40}
SUBJECTS = {
    "el gato": "the cat",
    "el perro": "the dog",
    "la niña": "the girl",
    "el rey": "the king",
}
VERBS = {"come": "eats", "ve": "sees", "tiene": "has", "quiere": "wants"}
OBJECTS = {"pan": "bread", "agua": "water", "una casa": "a house", "un libro": "a book"}


def sentence_pair(rng: np.random.Generator) -> tuple[str, str]:
    parts = [list(table.items())[rng.integers(len(table))] for table in (SUBJECTS, VERBS, OBJECTS)]
    return " ".join(es for es, _ in parts) + ".", " ".join(en for _, en in parts) + "."


class ToyEsEn(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.Translation(languages=("es", "en")),
            supervised_keys=("es", "en"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, n) for split, n in SIZES.items()}

    def _generate_examples(self, split, n):
        rng = np.random.default_rng(list(SIZES).index(split))
        for i in range(n):
            es, en = sentence_pair(rng)
            yield i, {"es": es, "en": en}


def build(data_dir: str) -> str:
    ToyEsEn(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir
