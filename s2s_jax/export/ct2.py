"""A Hugging Face Marian export (``s2s export --to hf-marian``) -> a CTranslate2 model.

Why not ``ct2-transformers-converter``: its Marian loader assumes Opus-MT's conventions, in
which the decoder starts from a zero vector and the last vocabulary row (``<pad>``) is dropped.
On these exports it stops with a vocabulary size mismatch, and were the rows made to fit, it
would still start decoding from zeros where s2s_jax's decoders start from the learned
embedding of ``<s>`` (id 1), changing every translation. This one is CTranslate2's BART
loader (the same post-LN encoder-decoder layers) with Marian's settings (no embedding
LayerNorm, no pre-LN) and s2s_jax's tokens: decoding starts from ``<s>``, and the vocabularies
are the export's SentencePiece pieces in id order, so CTranslate2 reads and writes the pieces
``source.spm`` and ``target.spm`` make. int8 is chosen when the model is loaded
(``ctranslate2.Translator(..., compute_type="int8")``) or with ``quantization`` here.
"""

from __future__ import annotations

import os
from pathlib import Path

from s2s_jax.data.vocab import BOS_ID, EOS_ID, UNK_ID
from s2s_jax.export.tokenizers import SOURCE_SPM, TARGET_SPM, pieces


def marian_loader_class():
    from ctranslate2.converters.transformers import BartLoader

    class S2SMarianLoader(BartLoader):
        """BART's loader with Marian's layout and the export's own vocabularies."""

        def __init__(self, source: list[str], target: list[str]):
            self.source, self.target = source, target

        def get_model_spec(self, model):
            # BartLoader reads these two flags; Marian has neither (post-LN, no embedding norm).
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return super().get_model_spec(model)

        def get_vocabulary(self, model, tokenizer):
            return self.source

        def set_vocabulary(self, spec, tokens):
            spec.register_source_vocabulary(self.source)
            spec.register_target_vocabulary(self.target)

        def set_config(self, config, model, tokenizer):
            config.bos_token = self.target[BOS_ID]
            config.eos_token = self.target[EOS_ID]
            config.unk_token = self.target[UNK_ID]
            config.decoder_start_token = self.target[model.config.decoder_start_token_id]

    return S2SMarianLoader


def _converter(hf_dir: Path):
    import transformers
    from ctranslate2.converters.converter import Converter

    loader_class = marian_loader_class()

    class S2SMarianConverter(Converter):
        def _load(self):
            model = transformers.MarianMTModel.from_pretrained(str(hf_dir)).eval()
            source, target = (
                pieces((hf_dir / name).read_bytes()) for name in (SOURCE_SPM, TARGET_SPM)
            )
            return loader_class(source, target)(model, None)

    return S2SMarianConverter()


def convert(
    hf_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    quantization: str | None = None,
    *,
    force: bool = False,
) -> str:
    """Converts an ``s2s export --to hf-marian`` directory into a CTranslate2 model directory.

    Args:
      hf_dir: the Hugging Face export (config, weights, ``source.spm`` / ``target.spm``).
      output_dir: where to write; must not exist unless ``force`` (then it is replaced).
      quantization: CTranslate2 weight type (e.g. "int8"); None keeps float32.
      force: replace an existing ``output_dir``.

    Returns:
      ``output_dir`` as a string. Translate with ``ctranslate2.Translator(output_dir)`` on
      SentencePiece pieces of ``source.spm`` (the export copies both ``.spm`` files there).
    """
    hf_dir = Path(hf_dir)
    out = _converter(hf_dir).convert(str(output_dir), quantization=quantization, force=force)
    for name in (SOURCE_SPM, TARGET_SPM):
        Path(out, name).write_bytes((hf_dir / name).read_bytes())
    return out
