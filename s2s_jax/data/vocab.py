"""Vocabularies: special token ids shared by every part of s2s_jax, and a character vocabulary.

`CharVocab` is the small tokenizer interface (``encode`` / ``decode`` / ``size``) that the
SentencePiece tokenizer shares, so the pipeline and evaluation never care which one they hold.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")

# How an unknown token is shown by `decode`; a single visible character keeps strings aligned.
UNK_TEXT = "?"

_KIND = "char"


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline and evaluation need from any tokenizer (chars or SentencePiece).

    `CharVocab` and `SentencePieceTokenizer` both satisfy it. Ids 0..3 are always PAD, BOS, EOS
    and UNK; ``isinstance(x, Tokenizer)`` checks that the members exist, not their signatures.
    """

    @property
    def size(self) -> int:
        """Number of ids, special tokens included."""
        ...

    def encode(self, text: str) -> list[int]:
        """`text` -> `[length]` ids, without BOS or EOS."""
        ...

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """`[length]` ids -> text, stopping at the first EOS and skipping PAD and BOS."""
        ...


class VocabError(ValueError):
    """Raised for text a vocabulary cannot encode or data it cannot be built from."""


class CharVocab:
    """Maps single characters to ids; ids 0..3 are the special tokens, then `chars` in order.

    Args:
      chars: the alphabet, one character per symbol, in id order; non-empty, no duplicates.

    Raises:
      VocabError: if `chars` is empty or repeats a character.
    """

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars:
            raise VocabError(f"CharVocab needs a non-empty string of characters, got {chars!r}.")
        repeated = sorted(c for c, n in Counter(chars).items() if n > 1)
        if repeated:
            raise VocabError(
                f"CharVocab characters must be distinct; {repeated!r} appear more than once "
                f"in {chars!r}. Remove the duplicates."
            )
        self._chars = chars
        offset = len(SPECIAL_TOKENS)
        self._char_to_id = {c: i + offset for i, c in enumerate(chars)}

    @property
    def chars(self) -> str:
        """The alphabet, in id order (without the special tokens)."""
        return self._chars

    @property
    def size(self) -> int:
        """Number of ids, special tokens included."""
        return len(SPECIAL_TOKENS) + len(self._chars)

    def encode(self, text: str, *, allow_unk: bool = False) -> list[int]:
        """Encodes `text` to ids, one per character; no BOS/EOS is added.

        Args:
          text: the string to encode.
          allow_unk: map characters outside the alphabet to UNK_ID instead of raising.

        Returns:
          `[len(text)]` list of ids.

        Raises:
          VocabError: if `text` holds characters outside the alphabet and `allow_unk` is False.
        """
        lookup = self._char_to_id
        if allow_unk:
            return [lookup.get(c, UNK_ID) for c in text]
        try:
            return [lookup[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in lookup})
            raise VocabError(
                f"Cannot encode characters {unknown!r}: the alphabet is {self._chars!r}. "
                "Pass allow_unk=True to map them to <unk>, or build the vocab with them."
            ) from None

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Decodes ids to text: stops at the first EOS, skips PAD and BOS, shows UNK as "?".

        Args:
          ids: `[length]` ids (list or 1-D numpy array).

        Returns:
          The decoded string.

        Raises:
          VocabError: if `ids` is not 1-D or holds an id outside `[0, size)`.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise VocabError(f"decode expects a 1-D sequence of ids, got shape {ids.shape}.")
        pieces = []
        for token in ids.tolist():
            if token == EOS_ID:
                break
            if token in (PAD_ID, BOS_ID):
                continue
            pieces.append(self._id_to_text(token))
        return "".join(pieces)

    def _id_to_text(self, token: int) -> str:
        if token == UNK_ID:
            return UNK_TEXT
        index = token - len(SPECIAL_TOKENS)
        if not 0 <= index < len(self._chars):
            raise VocabError(f"Id {token} is outside this vocabulary of size {self.size}.")
        return self._chars[index]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, inverted by `CharVocab.from_dict`."""
        return {"kind": _KIND, "chars": self._chars, "special_tokens": list(SPECIAL_TOKENS)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharVocab:
        """Rebuilds a vocabulary saved by `to_dict`.

        Raises:
          VocabError: if `d` is not a character vocabulary or its special tokens differ from
            this version's (ids would silently shift).
        """
        if not isinstance(d, dict) or d.get("kind") != _KIND or "chars" not in d:
            raise VocabError(
                f"Not a saved CharVocab (expected a dict with kind={_KIND!r} and 'chars'): {d!r}"
            )
        specials = tuple(d.get("special_tokens", SPECIAL_TOKENS))
        if specials != SPECIAL_TOKENS:
            raise VocabError(
                f"Saved vocab has special tokens {specials}, this code uses {SPECIAL_TOKENS}; "
                "the ids would not match. Rebuild the vocab."
            )
        return cls(d["chars"])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary to `path` as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharVocab:
        """Reads a vocabulary written by `save`.

        Raises:
          FileNotFoundError: if `path` does not exist.
          VocabError: if the file does not hold a saved CharVocab.
        """
        if not os.path.exists(path):
            raise FileNotFoundError(f"No vocabulary file at {os.fspath(path)!r}.")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other._chars == self._chars

    def __hash__(self) -> int:
        return hash(self._chars)

    def __repr__(self) -> str:
        return f"CharVocab({self._chars!r})"
