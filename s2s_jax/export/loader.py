"""Translates text with an ``s2s export --to stablehlo`` directory, without s2s_jax.

Needs jax (with flatbuffers, which ``jax.export`` deserializes with), numpy and sentencepiece
only; the export writes a copy of this file beside its other files:

    python EXPORT/loader.py EXPORT [--method beam|greedy] < sources.txt > translations.txt

or from Python::

    translator = ExportedTranslator("EXPORT", method="beam")
    translator.translate(["0123", "98765"])

Each line is tokenized with ``source.spm`` and EOS appended, as s2s_jax does; lines are decoded
in batches padded to the export's bucket ``[batch, src_len]`` (a line longer than ``src_len - 1``
pieces is an error), and the best hypothesis of each is detokenized with ``target.spm``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
import sentencepiece

FORMAT = 1
MANIFEST = "manifest.json"


class ExportedTranslator:
    """An export directory's decode function, params and tokenizers, ready to translate.

    Args:
      directory: the export (``manifest.json`` and the files it names).
      method: "beam" or "greedy".
    """

    def __init__(self, directory: str | Path, method: str = "beam"):
        directory = Path(directory)
        self.manifest = json.loads((directory / MANIFEST).read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(
                f"{directory} is export format {self.manifest.get('format')!r}; this loader "
                f"reads format {FORMAT}."
            )
        functions = self.manifest["functions"]
        if method not in functions:
            raise ValueError(f"method {method!r}: this export has {', '.join(functions)}.")
        serialized = (directory / functions[method]["file"]).read_bytes()
        self._decode = jax.jit(jax.export.deserialize(bytearray(serialized)).call)
        params = self.manifest["params"]
        with np.load(directory / params["file"]) as arrays:
            self._params = [jax.device_put(arrays[f"p{i:04d}"]) for i in range(params["count"])]
        tokenizer = self.manifest["tokenizer"]
        self.source, self.target = (
            sentencepiece.SentencePieceProcessor(model_file=str(directory / tokenizer[side]))
            for side in ("source", "target")
        )
        self.ids = self.manifest["special_ids"]
        self.batch = self.manifest["bucket"]["batch"]
        self.src_len = self.manifest["bucket"]["src_len"]

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Source ids of every line, EOS last. Raises ValueError naming every line too long."""
        encoded = [[*self.source.encode(line), self.ids["eos"]] for line in lines]
        too_long = [i + 1 for i, ids in enumerate(encoded) if len(ids) > self.src_len]
        if too_long:
            raise ValueError(
                f"line(s) {', '.join(map(str, too_long[:10]))}: more than "
                f"{self.src_len - 1} source pieces, the export's bucket limit."
            )
        return encoded

    def decode_ids(self, encoded: Sequence[Sequence[int]]) -> list[list[int]]:
        """Output ids (EOS and PAD removed) of the best hypothesis of every source."""
        out = []
        for start in range(0, len(encoded), self.batch):
            chunk = encoded[start : start + self.batch]
            inputs = np.full((self.batch, self.src_len), self.ids["pad"], np.int32)
            mask = np.zeros((self.batch, self.src_len), bool)
            for row, ids in enumerate(chunk):
                inputs[row, : len(ids)], mask[row, : len(ids)] = ids, True
            sequences, _, _ = self._decode(self._params, inputs, mask)
            for row in np.asarray(sequences)[: len(chunk), 0].tolist():
                end = row.index(self.ids["eos"]) if self.ids["eos"] in row else len(row)
                out.append([t for t in row[:end] if t not in (self.ids["pad"], self.ids["bos"])])
        return out

    def translate(self, lines: Sequence[str]) -> list[str]:
        """The translation of every line."""
        return [self.target.decode(ids) for ids in self.decode_ids(self.encode(lines))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", help="the export directory")
    parser.add_argument("--method", default="beam", choices=("beam", "greedy"))
    args = parser.parse_args(argv)
    lines = sys.stdin.read().splitlines()
    try:
        translations = ExportedTranslator(args.export, args.method).translate(lines)
    except (ValueError, FileNotFoundError) as e:
        print(f"loader: error: {e}", file=sys.stderr)
        return 2
    for text in translations:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
