"""Real translation data: a TFDS dataset through Grain, with SentencePiece vocabularies.

Project-built datasets (``bible_es_en``) are built on first use; any other TFDS translation
dataset must be prepared in ``data.tfds_data_dir`` beforehand (the error says how).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from s2s_jax.data.batching import auto_buckets
from s2s_jax.data.config import DataConfig
from s2s_jax.data.grain_pipeline import make_eval_batches, make_train_iterator
from s2s_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer, build_tokenizers
from s2s_jax.data.tfds_source import TranslationSource, translation_source
from s2s_jax.data.types import Data

# Text metrics first; exact match still tells how often a sentence comes out verbatim.
METRICS = ("bleu", "chrf", "ter", "exact_match")


def _build_bible(data_dir: str) -> None:
    from s2s_jax.data.bible import build_bible

    build_bible(data_dir)


# Datasets this project builds itself from local files, so a run never needs a download.
PROJECT_DATASETS: dict[str, Callable[[str], None]] = {"bible_es_en": _build_bible}


def data_dir_of(data: DataConfig) -> str:
    return os.path.expanduser(
        data.tfds_data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    )


def open_split(data: DataConfig, split: str) -> TranslationSource:
    """One split as text examples; builds project datasets on first use."""
    data_dir = data_dir_of(data)
    name = data.tfds_name
    if name in PROJECT_DATASETS and not (Path(data_dir) / name).is_dir():
        PROJECT_DATASETS[name](data_dir)
    return translation_source(
        name, split=split, data_dir=data_dir, src_lang=data.src_lang, tgt_lang=data.tgt_lang
    )


def train_buckets(data: DataConfig) -> tuple[int, ...]:
    return data.buckets or auto_buckets(data.max_tokens, num=4)


def tokenizers_for(
    data: DataConfig, train: TranslationSource, workdir: str, seed: int
) -> tuple[SentencePieceTokenizer, SentencePieceTokenizer]:
    """SentencePiece models trained on the train split (or reloaded from ``workdir``)."""
    return build_tokenizers(
        ((e["inputs"], e["targets"]) for e in (train[i] for i in range(len(train)))),
        workdir,
        shared=data.shared_vocab,
        vocab_size=data.vocab_size,
        model_type=data.spm_model_type,
        seed=seed,
    )


def build_translation_data(
    data: DataConfig,
    seed: int,
    workdir: str | os.PathLike,
    *,
    eval_batch_size: int,
    max_eval: int = 0,
    eval_split: str | None = None,
    process_rows: tuple[int, int] | None = None,
) -> Data:
    """Tokenizers, the training iterator and eval batches for ``data.source == "tfds"``.

    ``eval_split`` overrides ``data.eval_split``; ``process_rows`` = (start, stop) rows of each
    global batch that this process loads.
    """
    train = open_split(data, data.train_split)
    evaluation = open_split(data, eval_split or data.eval_split)
    src_tok, tgt_tok = tokenizers_for(data, train, str(workdir), seed)
    buckets = train_buckets(data)
    pack = data.pack_length
    start, stop = process_rows or (0, data.batch_size)
    iterator = make_train_iterator(
        train, (src_tok, tgt_tok), batch_size=stop - start, max_length=data.max_tokens,
        seed=seed, buckets=None if pack else buckets, pack_length=pack or None,
        shard_index=start // (stop - start), shard_count=data.batch_size // (stop - start),
    )  # fmt: skip
    num_eval = min(max_eval or len(evaluation), len(evaluation))
    batches = make_eval_batches(
        evaluation, (src_tok, tgt_tok), batch_size=eval_batch_size, max_examples=num_eval
    )
    return Data(
        src_vocab=src_tok,
        tgt_vocab=tgt_tok,
        train=iterator,
        eval_examples=[evaluation[i] for i in range(num_eval)],
        eval_batches=batches,
        buckets=buckets,
        default_metrics=METRICS,
    )
