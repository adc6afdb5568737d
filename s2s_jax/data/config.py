"""`DataConfig`: the run config's ``data`` section as a frozen, validated record.

Defaults equal `s2s_jax.config.base_config()`'s (a test keeps the two in step). Every bad value
raises ValueError naming the key and what to set instead, before any data is read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from s2s_jax.data.sentencepiece_tokenizer import MODEL_TYPES
from s2s_jax.data.tasks import DEFAULT_NOISE_STD, TASKS
from s2s_jax.data.vocab import SPECIAL_TOKENS

SOURCES = ("task", "tfds")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where a run's data comes from and how it is batched.

    Attributes:
      source: "task" (a synthetic task of `data.tasks`) or "tfds" (a TFDS translation dataset).
      task, min_length, max_length, num_train, num_eval: the synthetic task and its splits.
      noise_std: float-frame tasks (noisy_digits): std of the Gaussian noise on each one-hot.
      batch_size: rows per training batch (all processes together).
      buckets: length boundaries; () derives them from the data (tasks) or max_tokens (tfds).
      tfds_name ... max_tokens: the TFDS dataset, its languages and splits, the SentencePiece
        vocabularies trained on it, and the longest training pair kept (ids, EOS included).
      pack_length: > 0 packs tfds training pairs into rows of this many ids.
    """

    source: str = "task"
    task: str = "reverse"
    min_length: int = 5
    max_length: int = 20
    num_train: int = 20000
    num_eval: int = 1000
    noise_std: float = DEFAULT_NOISE_STD
    batch_size: int = 64
    buckets: tuple[int, ...] = ()
    tfds_name: str = "bible_es_en"
    tfds_data_dir: str = ""
    src_lang: str = "es"
    tgt_lang: str = "en"
    train_split: str = "train"
    eval_split: str = "validation"
    vocab_size: int = 8000
    spm_model_type: str = "unigram"
    shared_vocab: bool = True
    max_tokens: int = 64
    pack_length: int = 0

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> DataConfig:
        """Builds and validates the config from a ``data`` section (ConfigDict or dict).

        Keys the section lacks keep their defaults.

        Raises:
          ValueError: on a key DataConfig does not know or an invalid value.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown data key(s) {', '.join(unknown)}; DataConfig knows {', '.join(names)}. "
                "Fix the spelling, or add the field to s2s_jax/data/config.py."
            )
        values = {k: section[k] for k in names if k in section}
        if "buckets" in values:
            values["buckets"] = tuple(values["buckets"])
        return cls(**values)

    def __post_init__(self) -> None:
        _check_choice("source", self.source, SOURCES)
        _check_at_least(self, "batch_size", 1)
        _check_buckets(self.buckets)
        if self.source == "task":
            self._check_task()
        else:
            self._check_tfds()

    def _check_task(self) -> None:
        _check_choice("task", self.task, tuple(sorted(TASKS)))
        _check_at_least(self, "min_length", 1)
        if self.max_length < self.min_length:
            raise ValueError(
                f"data.max_length={self.max_length} is below data.min_length={self.min_length}; "
                "raise max_length or lower min_length."
            )
        _check_at_least(self, "num_train", 1)
        _check_at_least(self, "num_eval", 1)
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"data.noise_std must be a finite value >= 0, got {self.noise_std}.")
        if self.pack_length:
            raise ValueError(
                "data.pack_length packs TFDS training data only; synthetic tasks are bucketed. "
                "Set data.pack_length=0 or data.source='tfds'."
            )

    def _check_tfds(self) -> None:
        if not self.tfds_name:
            raise ValueError("data.tfds_name is empty; name a TFDS dataset, e.g. 'bible_es_en'.")
        if self.src_lang == self.tgt_lang:
            raise ValueError(
                f"data.src_lang and data.tgt_lang are both {self.src_lang!r}; name two different "
                "text features of the dataset."
            )
        _check_choice("spm_model_type", self.spm_model_type, MODEL_TYPES)
        _check_at_least(self, "vocab_size", len(SPECIAL_TOKENS) + 1)
        _check_at_least(self, "max_tokens", 1)
        _check_at_least(self, "pack_length", 0)
        if self.pack_length and self.pack_length < self.max_tokens:
            raise ValueError(
                f"data.pack_length={self.pack_length} is below data.max_tokens={self.max_tokens}: "
                "the longest kept pair would not fit a row. Raise pack_length or lower max_tokens."
            )
        if self.buckets and not self.pack_length and self.buckets[-1] < self.max_tokens:
            raise ValueError(
                f"The largest of data.buckets={self.buckets} is below data.max_tokens="
                f"{self.max_tokens}; add a bucket >= max_tokens or lower max_tokens."
            )


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown data.{key} {value!r}; valid: {', '.join(valid)}.")


def _check_at_least(config: DataConfig, key: str, low: int) -> None:
    value = getattr(config, key)
    if value < low:
        raise ValueError(f"data.{key} must be >= {low}, got {value}.")


def _check_buckets(buckets: tuple[int, ...]) -> None:
    if any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
        raise ValueError(
            f"data.buckets must be strictly increasing positive lengths, got {buckets!r}; "
            "e.g. (8, 16, 24), or () to derive them from the data."
        )
