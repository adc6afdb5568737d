"""SentencePiece subword tokenizers: deterministic training, loading, and per-workdir vocabularies.

`SentencePieceTokenizer` has the same interface as `CharVocab` (``encode`` / ``decode`` /
``size``, special ids PAD=0, BOS=1, EOS=2, UNK=3), so the pipeline and evaluation never care which
one they hold. Models are trained from Python iterables (no text files needed) and written
atomically, so a workdir either holds a complete model or none.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, VocabError

MODEL_TYPES = ("unigram", "bpe")
SHARED_MODEL = "spm_shared.model"
SOURCE_MODEL = "spm_source.model"
TARGET_MODEL = "spm_target.model"
DEFAULT_MAX_SENTENCES = 1_000_000

_SPECIAL_IDS = {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "unk": UNK_ID}


class SentencePieceTokenizer:
    """A trained SentencePiece model behind the `Tokenizer` interface.

    `decode(encode(text)) == text` up to SentencePiece's normalization (NFKC, runs of
    whitespace collapsed, leading/trailing whitespace dropped).

    Args:
      model_path: a ``.model`` file written by `train_sentencepiece`.

    Raises:
      FileNotFoundError: if `model_path` does not exist.
      VocabError: if the file is not a SentencePiece model or its special ids are not
        PAD=0, BOS=1, EOS=2, UNK=3 (ids would silently disagree with the rest of s2s_jax).
    """

    def __init__(self, model_path: str | os.PathLike) -> None:
        self._path = os.fspath(model_path)
        if not os.path.exists(self._path):
            raise FileNotFoundError(
                f"No SentencePiece model at {self._path!r}; train one with train_sentencepiece "
                "or build_tokenizers."
            )
        with open(self._path, "rb") as f:
            serialized = f.read()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(serialized)
        except RuntimeError as e:
            raise VocabError(f"{self._path!r} is not a readable SentencePiece model: {e}") from e
        actual = {
            "pad": self._sp.pad_id(),
            "bos": self._sp.bos_id(),
            "eos": self._sp.eos_id(),
            "unk": self._sp.unk_id(),
        }
        if actual != _SPECIAL_IDS:
            raise VocabError(
                f"SentencePiece model {self._path!r} has special ids {actual}, s2s_jax needs "
                f"{_SPECIAL_IDS}. Retrain it with train_sentencepiece."
            )
        spec = sentencepiece_model_pb2.ModelProto.FromString(serialized).trainer_spec
        self._model_type = spec.ModelType.Name(spec.model_type).lower()

    @property
    def model_path(self) -> str:
        """Path of the ``.model`` file this tokenizer was loaded from."""
        return self._path

    @property
    def size(self) -> int:
        """Number of ids, special tokens included."""
        return self._sp.GetPieceSize()

    @property
    def model_type(self) -> str:
        """The model type recorded in the file: "unigram" or "bpe"."""
        return self._model_type

    def encode(self, text: str) -> list[int]:
        """`text` -> `[length]` ids, without BOS or EOS."""
        return list(self._sp.EncodeAsIds(text))

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """`[length]` ids -> text, stopping at the first EOS and skipping PAD and BOS.

        Raises:
          VocabError: if `ids` is not 1-D or holds an id outside `[0, size)`.
        """
        ids = np.asarray(ids if hasattr(ids, "__len__") else list(ids), dtype=np.int64)
        if ids.ndim != 1:
            raise VocabError(f"decode expects a 1-D sequence of ids, got shape {ids.shape}.")
        bad = ids[(ids < 0) | (ids >= self.size)]
        if bad.size:
            raise VocabError(f"Id {int(bad[0])} is outside this vocabulary of size {self.size}.")
        ends = np.flatnonzero(ids == EOS_ID)
        if ends.size:
            ids = ids[: ends[0]]
        kept = ids[(ids != PAD_ID) & (ids != BOS_ID)]
        return self._sp.DecodeIds(kept.tolist())

    def id_to_piece(self, token: int) -> str:
        """The subword string of one id (e.g. "▁the"), for inspection."""
        return self._sp.IdToPiece(int(token))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SentencePieceTokenizer)
            and other._sp.serialized_model_proto() == self._sp.serialized_model_proto()
        )

    def __hash__(self) -> int:
        return hash(self._sp.serialized_model_proto())

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self._path!r}, size={self.size})"


def reservoir_sample(items: Iterable[Any], max_items: int, seed: int) -> list[Any]:
    """A uniform sample of at most `max_items` items, in their original order (one pass).

    Reservoir sampling keeps memory at `max_items` however long `items` is; the same items and
    seed always give the same sample.
    """
    if max_items < 1:
        raise ValueError(f"max_items (max_sentences) must be >= 1, got {max_items}.")
    rng = np.random.default_rng(seed)
    reservoir: list[tuple[int, Any]] = []
    for i, item in enumerate(items):
        if i < max_items:
            reservoir.append((i, item))
            continue
        slot = int(rng.integers(0, i + 1))
        if slot < max_items:
            reservoir[slot] = (i, item)
    return [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]


def _check_options(vocab_size: int, model_type: str, character_coverage: float) -> None:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}."
        )
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}.")


def _train_proto(
    sentences: list[str], vocab_size: int, model_type: str, character_coverage: float, threads: int
) -> bytes:
    """Trains on an in-memory list; returns the serialized model."""
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            pad_piece=SPECIAL_TOKENS[PAD_ID],
            bos_piece=SPECIAL_TOKENS[BOS_ID],
            eos_piece=SPECIAL_TOKENS[EOS_ID],
            unk_piece=SPECIAL_TOKENS[UNK_ID],
            # Sampling happened in Python with our seed; SentencePiece's own sampling and
            # shuffling would draw from a process-global generator.
            input_sentence_size=0,
            shuffle_input_sentence=False,
            # The thread count changes the EM sums' order and is recorded in the model file.
            num_threads=threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece training failed ({e}). If the vocabulary is too large for the "
            "data, lower vocab_size (the error names the largest possible value)."
        ) from e
    return buffer.getvalue()


def _write_atomic(path: str, data: bytes) -> None:
    # Write-then-rename so an interrupted run never leaves a truncated model to be reloaded.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def train_sentencepiece(
    sentences: Iterable[str],
    model_path: str | os.PathLike,
    *,
    vocab_size: int,
    model_type: str = "unigram",
    seed: int = 0,
    character_coverage: float = 1.0,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    num_threads: int = 1,
) -> str:
    """Trains a SentencePiece model and writes it to `model_path`.

    Deterministic: the same sentences, options and seed give a byte-identical file.

    Args:
      sentences: training text, one sentence per item, read once.
      model_path: where to write the model (conventionally ending in ``.model``).
      vocab_size: number of ids, the 4 special tokens included.
      model_type: "unigram" or "bpe".
      seed: seed of the sample drawn when there are more than `max_sentences` sentences.
      character_coverage: fraction of characters the model must cover (1.0 for small alphabets,
        0.9995 is usual for CJK).
      max_sentences: train on a uniform sample of at most this many sentences.
      num_threads: SentencePiece trainer threads; part of what determines the output.

    Returns:
      `model_path` as a string.

    Raises:
      ValueError: on a bad option, no sentences, or a vocabulary the data cannot fill.
    """
    _check_options(vocab_size, model_type, character_coverage)
    sample = [s for s in reservoir_sample(sentences, max_sentences, seed) if s.strip()]
    if not sample:
        raise ValueError("train_sentencepiece got no non-empty sentences to train on.")
    spm.set_random_generator_seed(seed)
    path = os.fspath(model_path)
    _write_atomic(
        path, _train_proto(sample, vocab_size, model_type, character_coverage, num_threads)
    )
    return path


def _load_checked(path: str, vocab_size: int, model_type: str) -> SentencePieceTokenizer:
    tokenizer = SentencePieceTokenizer(path)
    if tokenizer.size != vocab_size or tokenizer.model_type != model_type:
        raise ValueError(
            f"{path!r} holds a {tokenizer.model_type} model of {tokenizer.size} ids but "
            f"{model_type} with vocab_size={vocab_size} was asked for. Use a fresh workdir or "
            "delete the old model files to retrain."
        )
    return tokenizer


def _flatten_pairs(pairs: Iterable[tuple[str, str]]) -> Iterator[str]:
    for source, target in pairs:
        yield source
        yield target


def build_tokenizers(
    train_pairs: Iterable[tuple[str, str]],
    workdir: str | os.PathLike,
    *,
    shared: bool,
    vocab_size: int,
    model_type: str = "unigram",
    seed: int = 0,
    character_coverage: float = 1.0,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
) -> tuple[SentencePieceTokenizer, SentencePieceTokenizer]:
    """Source and target tokenizers for a run: loaded from `workdir`, or trained and saved there.

    Models live in `workdir` as ``spm_shared.model`` (one vocabulary for both sides, trained on
    sources and targets together) or ``spm_source.model`` and ``spm_target.model``. When they
    already exist, `train_pairs` is not read at all.

    Args:
      train_pairs: (source, target) training strings, read at most once.
      workdir: the run directory (created if missing).
      shared: one vocabulary for both sides, else one per side.
      vocab_size: ids per vocabulary, special tokens included.
      model_type: "unigram" or "bpe".
      seed: sampling seed (see `train_sentencepiece`).
      character_coverage: see `train_sentencepiece`.
      max_sentences: at most this many pairs are sampled for training.

    Returns:
      `(source_tokenizer, target_tokenizer)`; the same object twice when `shared`.

    Raises:
      ValueError: if existing model files disagree with `vocab_size` or `model_type`.
    """
    _check_options(vocab_size, model_type, character_coverage)
    os.makedirs(workdir, exist_ok=True)
    names = (SHARED_MODEL,) if shared else (SOURCE_MODEL, TARGET_MODEL)
    paths = [os.path.join(os.fspath(workdir), name) for name in names]
    if not all(os.path.exists(p) for p in paths):
        sample = reservoir_sample(train_pairs, max_sentences, seed)
        if shared:
            corpora = [list(_flatten_pairs(sample))]
        else:
            corpora = [[s for s, _ in sample], [t for _, t in sample]]
        for path, corpus in zip(paths, corpora, strict=True):
            train_sentencepiece(
                corpus,
                path,
                vocab_size=vocab_size,
                model_type=model_type,
                seed=seed,
                character_coverage=character_coverage,
                max_sentences=max(1, len(corpus)),  # already sampled above
            )
    tokenizers = [_load_checked(p, vocab_size, model_type) for p in paths]
    return (tokenizers[0], tokenizers[0]) if shared else (tokenizers[0], tokenizers[1])
