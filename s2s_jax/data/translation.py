"""Real translation data: a TFDS dataset through Grain, with SentencePiece vocabularies.

Project-built datasets (``bible_es_en``) are built on first use; any other TFDS translation
dataset must be prepared in ``data.tfds_data_dir`` beforehand (the error says how).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from s2s_jax.data.batching import auto_buckets
from s2s_jax.data.grain_pipeline import make_eval_batches, make_train_iterator
from s2s_jax.data.sentencepiece_tokenizer import build_tokenizers
from s2s_jax.data.tfds_source import TranslationSource, translation_source


def _build_bible(data_dir: str) -> None:
    from s2s_jax.data.bible import build_bible

    build_bible(data_dir)


# Datasets this project builds itself from local files, so a run never needs a download.
PROJECT_DATASETS: dict[str, Callable[[str], None]] = {"bible_es_en": _build_bible}


def data_dir_of(data: Mapping[str, Any]) -> str:
    return os.path.expanduser(
        data["tfds_data_dir"] or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    )


def open_split(data: Mapping[str, Any], split: str) -> TranslationSource:
    """One split as (source, target) strings; builds project datasets on first use."""
    data_dir = data_dir_of(data)
    name = data["tfds_name"]
    if name in PROJECT_DATASETS and not (Path(data_dir) / name).is_dir():
        PROJECT_DATASETS[name](data_dir)
    return translation_source(
        name, split=split, data_dir=data_dir, src_lang=data["src_lang"], tgt_lang=data["tgt_lang"]
    )


def train_buckets(data: Mapping[str, Any]) -> tuple[int, ...]:
    if data["buckets"]:
        return tuple(sorted(int(b) for b in data["buckets"]))
    return auto_buckets(data["max_tokens"], num=4)


def tokenizers_for(data: Mapping[str, Any], train: TranslationSource, workdir: str, seed: int):
    """SentencePiece models trained on the train split (or reloaded from ``workdir``)."""
    return build_tokenizers(
        (train[i] for i in range(len(train))),
        workdir,
        shared=data["shared_vocab"],
        vocab_size=data["vocab_size"],
        model_type=data["spm_model_type"],
        seed=seed,
    )


def build_translation_data(
    data: Mapping[str, Any],
    seed: int,
    workdir: str | os.PathLike,
    *,
    eval_batch_size: int,
    max_eval: int = 0,
    eval_split: str | None = None,
    process_rows: tuple[int, int] | None = None,
):
    """Tokenizers, the training iterator and eval batches for ``data.source == "tfds"``.

    Returns a ``s2s_jax.data.pipeline.Data``; ``eval_split`` overrides ``data.eval_split``;
    ``process_rows`` = (start, stop) rows of each global batch that this process loads.
    """
    from s2s_jax.data.pipeline import Data  # pipeline imports this module

    train = open_split(data, data["train_split"])
    evaluation = open_split(data, eval_split or data["eval_split"])
    src_tok, tgt_tok = tokenizers_for(data, train, str(workdir), seed)
    buckets = train_buckets(data)
    pack = data["pack_length"]
    start, stop = process_rows or (0, data["batch_size"])
    iterator = make_train_iterator(
        train, (src_tok, tgt_tok), batch_size=stop - start, max_length=data["max_tokens"],
        seed=seed, buckets=None if pack else buckets, pack_length=pack or None,
        shard_index=start // (stop - start), shard_count=data["batch_size"] // (stop - start),
    )  # fmt: skip
    num_eval = min(max_eval or len(evaluation), len(evaluation))
    eval_pairs = [evaluation[i] for i in range(num_eval)]
    batches = make_eval_batches(
        evaluation, (src_tok, tgt_tok), batch_size=eval_batch_size, max_examples=num_eval
    )
    return Data(src_tok, tgt_tok, iterator, eval_pairs, batches, buckets)
