"""A workdir's vocabularies as SentencePiece model files, for the tokenizers of exported models.

Hugging Face's ``MarianTokenizer`` reads ``source.spm`` and ``target.spm`` (SentencePiece models)
and ``vocab.json`` (piece -> id); the StableHLO loader reads the two ``.spm`` files alone. A
SentencePiece workdir (TFDS data) already has its models, copied as they are. A character
vocabulary (``CharVocab``, the synthetic tasks) is written as a SentencePiece CHAR model with the
same ids: the special pieces at 0-3, then one piece per character, and identity normalisation
(no whitespace escaping, no dummy prefix), so it encodes every string of the alphabet into the
ids ``CharVocab.encode`` gives. Two differences remain, both outside the alphabet: an unknown
character becomes ``<unk>`` (CharVocab raises) and ``<unk>`` decodes as " ⁇ " (CharVocab: "?").
``MarianTokenizer`` also strips leading and trailing whitespace when it decodes.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2

from s2s_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, CharVocab, Tokenizer

SOURCE_SPM = "source.spm"
TARGET_SPM = "target.spm"


def char_model(chars: str) -> bytes:
    """A serialized SentencePiece CHAR model whose ids are ``CharVocab(chars)``'s."""
    model = sentencepiece_model_pb2.ModelProto()
    piece = sentencepiece_model_pb2.ModelProto.SentencePiece
    for i, token in enumerate(SPECIAL_TOKENS):
        model.pieces.add(
            piece=token, score=0.0, type=piece.UNKNOWN if i == UNK_ID else piece.CONTROL
        )
    for char in chars:
        model.pieces.add(piece=char, score=0.0, type=piece.NORMAL)
    spec = model.trainer_spec
    spec.model_type = sentencepiece_model_pb2.TrainerSpec.CHAR
    spec.vocab_size = len(model.pieces)
    spec.pad_id, spec.bos_id, spec.eos_id, spec.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    spec.pad_piece, spec.bos_piece, spec.eos_piece, spec.unk_piece = SPECIAL_TOKENS
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = False
    return model.SerializeToString()


def sentencepiece_model(vocab: Tokenizer) -> bytes:
    """The serialized SentencePiece model with ``vocab``'s ids.

    Raises:
      ValueError: ``vocab`` is neither a ``CharVocab`` nor a ``SentencePieceTokenizer``.
    """
    if isinstance(vocab, SentencePieceTokenizer):
        return Path(vocab.model_path).read_bytes()
    if isinstance(vocab, CharVocab):
        return char_model(vocab.chars)
    raise ValueError(
        f"cannot export a {type(vocab).__name__} vocabulary: only CharVocab and SentencePiece "
        "tokenizers have a SentencePiece form."
    )


def pieces(model: bytes) -> list[str]:
    """Every piece of a serialized SentencePiece model, in id order."""
    return [p.piece for p in sentencepiece_model_pb2.ModelProto.FromString(model).pieces]


def write_sentencepiece(directory: str | os.PathLike, src_vocab, tgt_vocab) -> tuple[bytes, bytes]:
    """Writes ``source.spm`` and ``target.spm`` into ``directory``; returns both models."""
    models = sentencepiece_model(src_vocab), sentencepiece_model(tgt_vocab)
    for name, model in zip((SOURCE_SPM, TARGET_SPM), models, strict=True):
        Path(directory, name).write_bytes(model)
    return models


def write_marian_tokenizer(directory: str | os.PathLike, src_vocab, tgt_vocab) -> None:
    """Writes a ``MarianTokenizer`` (``source.spm``, ``target.spm``, ``vocab.json``, and
    ``target_vocab.json`` when the sides' pieces differ) into ``directory``."""
    source, target = write_sentencepiece(directory, src_vocab, tgt_vocab)
    source_pieces, target_pieces = pieces(source), pieces(target)
    separate = source_pieces != target_pieces
    files = {"vocab.json": source_pieces, "target_vocab.json": target_pieces if separate else None}
    for name, tokens in files.items():
        if tokens is not None:
            ids = {token: i for i, token in enumerate(tokens)}
            text = json.dumps(ids, ensure_ascii=False, indent=1)
            Path(directory, name).write_text(text, encoding="utf-8")
    from transformers import MarianTokenizer  # optional dependency: imported only when used

    with warnings.catch_warnings():  # "Recommended: pip install sacremoses" (see the README)
        warnings.simplefilter("ignore")
        tokenizer = MarianTokenizer(
            source_spm=str(Path(directory, SOURCE_SPM)),
            target_spm=str(Path(directory, TARGET_SPM)),
            vocab=str(Path(directory, "vocab.json")),
            target_vocab_file=str(Path(directory, "target_vocab.json")) if separate else None,
            separate_vocabs=separate,
        )
    tokenizer.save_pretrained(str(directory))
