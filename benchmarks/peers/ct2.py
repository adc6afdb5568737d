"""W3 and W6 peer: CTranslate2 decoding the Hugging Face Marian weights (float32 and int8).

CTranslate2's own Marian converter assumes Opus-MT's layout: ``<pad>`` last in the vocabulary
and a decoder that starts from a zero embedding. The W3 model uses s2s_jax's ids instead (pad 0,
decoder start ``<s>`` = 1, eos 2), so the spec is built here with CTranslate2's BART loader (the
same post-LN encoder-decoder layers) and Marian's settings: no embedding LayerNorm, decoding
starts from ``<s>``'s embedding, and a generated vocabulary ``<pad> <s> </s> <unk> t4 t5 ...``
maps ids to the token strings CTranslate2 reads and writes. int8 is the same float32 model
quantised when it is loaded (``compute_type="int8"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import ctranslate2
import numpy as np
import transformers
from ctranslate2.converters.converter import Converter

from benchmarks.harness import System
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS
from s2s_jax.export.ct2 import marian_loader_class

COMPUTE_TYPES = ("float32", "int8")


def token_strings(vocab: int) -> list[str]:
    """Token string of every id: the s2s_jax specials, then ``t<id>``."""
    return list(SPECIAL_TOKENS) + [f"t{i}" for i in range(len(SPECIAL_TOKENS), vocab)]


class _InMemoryConverter(Converter):
    def __init__(self, model: transformers.MarianMTModel):
        self.model = model

    def _load(self):
        tokens = token_strings(self.model.config.vocab_size)
        # The export's loader (BART's, set up as Marian), one token list for both sides.
        return marian_loader_class()(tokens, tokens)(self.model, None)


def convert(model: transformers.MarianMTModel, output_dir: str | Path) -> str:
    """Writes the CTranslate2 float32 model of an s2s_jax-id ``MarianMTModel``; returns its dir."""
    if model.config.decoder_start_token_id != BOS_ID or model.config.pad_token_id != PAD_ID:
        raise ValueError(
            "convert() expects s2s_jax's ids (pad 0, decoder start 1), as marian_test_config "
            f"sets; got pad {model.config.pad_token_id}, start "
            f"{model.config.decoder_start_token_id}. Use ctranslate2's own converter for Opus-MT."
        )
    return _InMemoryConverter(model.eval()).convert(str(output_dir), force=True)


def translator(model_dir: str, compute_type: str) -> ctranslate2.Translator:
    """A Translator on the GPU if CTranslate2 sees one, else the CPU with all its threads."""
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"compute_type {compute_type!r}: choose {', '.join(COMPUTE_TYPES)}.")
    if ctranslate2.get_cuda_device_count() > 0:
        return ctranslate2.Translator(model_dir, device="cuda", compute_type=compute_type)
    threads = os.cpu_count() or 1
    return ctranslate2.Translator(
        model_dir, device="cpu", compute_type=compute_type, inter_threads=1, intra_threads=threads
    )


def translate_ids(
    model: ctranslate2.Translator,
    tokens: list[str],
    inputs: np.ndarray,
    *,
    beam_size: int,
    length: int,
) -> list[list[int]]:
    """Decodes ``inputs`` [batch, src_len] ids for ``length`` steps; returns the ids per row.

    EOS is blocked for ``length - 1`` steps (``min_decoding_length``) and the decode stops at
    ``length`` (``max_decoding_length``): the same step count as s2s_jax and ``generate``.
    ``tokens`` is ``token_strings(vocab)``, the vocabulary the model was converted with.
    """
    source = [[tokens[i] for i in row] for row in inputs.tolist()]
    results = model.translate_batch(
        source, beam_size=beam_size, min_decoding_length=length - 1,
        max_decoding_length=length, length_penalty=1.0, num_hypotheses=1,
    )  # fmt: skip
    index = {token: i for i, token in enumerate(tokens)}
    return [[index[token] for token in r.hypotheses[0]] for r in results]


def decode_system(
    workload: str,
    model_dir: str,
    compute_type: str,
    vocab: int,
    inputs: np.ndarray,
    *,
    beam_size: int,
    length: int,
) -> System:
    """``translate_batch`` of ``inputs`` [batch, src_len] with one compute type, as a System."""
    model = translator(model_dir, compute_type)
    tokens = token_strings(vocab)

    def run_once() -> None:
        translate_ids(model, tokens, inputs, beam_size=beam_size, length=length)

    return System(
        workload=workload,
        name=f"ct2_{compute_type}",
        run_once=run_once,
        work_per_call=float(inputs.shape[0] * length),
        peer=True,
        note=f"{model.device}, length_penalty 1.0",
    )


def file_decode_system(
    workload: str,
    model_dir: str,
    compute_type: str,
    source: Path,
    output: Path,
    *,
    beam_size: int,
    length: int,
    max_batch_size: int,
) -> System:
    """W6: a source file translated into ``output`` end to end, as a System.

    The model is an ``s2s export --to ct2`` directory (``source.spm`` and ``target.spm`` beside
    it): each call reads the lines, cuts them into SentencePiece pieces + ``</s>``, translates
    them (CTranslate2 sorts by length and batches ``max_batch_size`` at a time), joins the output
    pieces back into text and writes one line per source. Decoding runs exactly ``length``
    steps, as in ``translate_ids``.
    """
    import sentencepiece

    model = translator(model_dir, compute_type)
    source_spm, target_spm = (
        sentencepiece.SentencePieceProcessor(model_file=str(Path(model_dir, f"{side}.spm")))
        for side in ("source", "target")
    )
    lines = source.read_text(encoding="utf-8").splitlines()

    def run_once() -> None:
        text = source.read_text(encoding="utf-8").splitlines()
        pieces = [[*source_spm.encode(line, out_type=str), SPECIAL_TOKENS[EOS_ID]] for line in text]
        results = model.translate_batch(
            pieces, max_batch_size=max_batch_size, beam_size=beam_size,
            min_decoding_length=length - 1, max_decoding_length=length, length_penalty=1.0,
        )  # fmt: skip
        out = (target_spm.decode_pieces(r.hypotheses[0]) + "\n" for r in results)
        output.write_text("".join(out), encoding="utf-8")

    return System(
        workload=workload,
        name=f"ct2_{compute_type}",
        run_once=run_once,
        work_per_call=float(len(lines) * length),
        peer=True,
        note=f"{model.device}, batches of {max_batch_size} sorted by length, length_penalty 1.0",
    )
