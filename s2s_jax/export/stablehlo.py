"""Greedy and beam decoding of a trained workdir serialized as StableHLO (``jax.export``).

An export directory holds:

  decode_greedy.stablehlo, decode_beam.stablehlo  ``jax.export.Exported.serialize()`` bytes
  params.npz      the params in the decoding layout (``Seq2Seq.for_decoding``), arrays
                  ``p0000``, ``p0001``, ... in the order the functions take them
  source.spm, target.spm   the vocabularies as SentencePiece models (``export/tokenizers``)
  manifest.json   the bucket shape, decode settings, special ids and file names
  loader.py       a copy of ``s2s_jax/export/loader.py``, which runs the directory with jax,
                  numpy and sentencepiece alone

Each function is ``f(params, inputs, inputs_mask) -> (sequences, scores, lengths)`` with
``params`` the list of ``params.npz`` arrays, ``inputs`` ``[batch, src_len]`` int32 source ids
ending in EOS and right-padded with PAD, ``inputs_mask`` ``[batch, src_len]`` bool, and the
outputs of ``decoding.DecodeResult`` (``[batch, nbest, max_length]``, ``[batch, nbest]`` x2).
The shapes are fixed (one bucket): the loader pads every batch to them. Params are arguments
rather than constants so the ``.stablehlo`` files stay small and both share one copy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from s2s_jax.decoding.generate import DecodeConfig, generate
from s2s_jax.export import loader
from s2s_jax.export.loader import FORMAT, MANIFEST
from s2s_jax.export.tokenizers import SOURCE_SPM, TARGET_SPM, write_sentencepiece
from s2s_jax.export.workdir import ExportError, Trained

PARAMS = "params.npz"
# The run's decode settings both functions share (the per-row length budget and constraints).
_DECODE_FIELDS = ("max_length_ratio", "max_length_offset", "min_length", "no_repeat_ngram_size")
FILES = {"greedy": "decode_greedy.stablehlo", "beam": "decode_beam.stablehlo"}


def check_exportable(config) -> None:
    """Raises ExportError for models the loader cannot feed (it reads text lines)."""
    if getattr(config.encoder, "input", "tokens") != "tokens":
        raise ExportError(
            f"model.encoder.input={config.encoder.input!r} cannot be exported to StableHLO: "
            "the loader reads text lines, and this encoder reads float frames."
        )


def export_decode(
    model: Any, params: Any, cfg: DecodeConfig, *, batch: int, src_len: int, platforms=None
) -> tuple[jax.export.Exported, list[np.ndarray]]:
    """``generate`` for one ``[batch, src_len]`` bucket, exported.

    Args:
      model: the pair (``registry.pair``), params its unboxed params.
      cfg: the decoding (method, beam size, alpha, length budget, constraints).
      batch, src_len: the bucket shape.
      platforms: lowering platforms, e.g. ``("cpu", "cuda")``; None: the default backend.

    Returns:
      The ``Exported`` function and its params argument (decoding layout, flattened).
    """
    model, params = model.for_decoding(params)
    leaves, treedef = jax.tree.flatten(params)

    def decode(leaves, inputs, inputs_mask):
        result = generate(treedef.unflatten(leaves), inputs, inputs_mask, model=model, cfg=cfg)
        return result.sequences, result.scores, result.lengths

    specs = [jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves]
    source = jax.ShapeDtypeStruct((batch, src_len), jnp.int32)
    mask = jax.ShapeDtypeStruct((batch, src_len), jnp.bool_)
    exported = jax.export.export(jax.jit(decode), platforms=platforms)(specs, source, mask)
    return exported, [np.asarray(x) for x in leaves]


def decode_configs(base: DecodeConfig, beam_size: int, alpha: float | None) -> dict:
    """The greedy and beam ``DecodeConfig`` of an export: the run's length budget and
    constraints, one hypothesis each."""
    greedy = dataclasses.replace(base, method="greedy", nbest=1)
    beam = dataclasses.replace(
        base, method="beam", beam_size=beam_size, nbest=1,
        alpha=base.alpha if alpha is None else alpha,
    )  # fmt: skip
    return {"greedy": greedy, "beam": beam}


def _describe(cfg: DecodeConfig, file: str, src_len: int) -> dict:
    info = {"file": file, "method": cfg.method, "max_length": cfg.max_length(src_len)}
    if cfg.method == "beam":
        info.update(beam_size=cfg.beam_size, alpha=cfg.alpha)
    return info


def write(
    directory: Path,
    trained: Trained,
    *,
    batch: int,
    src_len: int | None = None,
    beam_size: int = 4,
    alpha: float | None = None,
    platforms: tuple[str, ...] | None = None,
) -> dict:
    """Writes the export of ``trained`` into the (empty) ``directory``; returns the manifest.

    ``src_len`` defaults to the run's largest length bucket; ``alpha`` to its ``eval.alpha``.
    """
    c = trained.components
    check_exportable(c.model_config)
    src_len = src_len or max(c.data.buckets)
    if batch < 1 or src_len < 2:
        raise ExportError(f"--batch must be >= 1 and --src-len >= 2, got {batch} and {src_len}.")
    functions = {}
    for name, cfg in decode_configs(c.decode_config, beam_size, alpha).items():
        exported, leaves = export_decode(
            c.model, trained.params, cfg, batch=batch, src_len=src_len, platforms=platforms
        )
        (directory / FILES[name]).write_bytes(exported.serialize())
        functions[name] = _describe(cfg, FILES[name], src_len)
    np.savez(directory / PARAMS, **{f"p{i:04d}": x for i, x in enumerate(leaves)})
    write_sentencepiece(directory, c.data.src_vocab, c.data.tgt_vocab)
    shutil.copyfile(loader.__file__, directory / "loader.py")
    base = c.decode_config
    manifest = {
        "format": FORMAT,
        "bucket": {"batch": batch, "src_len": src_len},
        "functions": functions,
        "decode": {k: getattr(base, k) for k in _DECODE_FIELDS},
        "params": {"file": PARAMS, "count": len(leaves)},
        "special_ids": {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "unk": UNK_ID},
        "tokenizer": {"source": SOURCE_SPM, "target": TARGET_SPM},
        "platforms": list(exported.platforms),
        "workdir": str(trained.workdir.resolve()),
        "step": trained.step,
        "jax_version": jax.__version__,
    }  # fmt: skip
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
