"""``s2s export``: write a trained workdir's model in a form serving tools load.

    s2s export --workdir W --to hf-marian OUT   # Hugging Face MarianMTModel + MarianTokenizer
    s2s export --workdir W --to ct2 OUT         # CTranslate2 (via the hf-marian export)
    s2s export --workdir W --to stablehlo OUT [--batch 32 --src-len 64 --beam-size 4]

Every error the user can fix is one line on stderr (exit status 2); set S2S_DEBUG=1 for the
traceback. Outputs are written into a temporary directory beside OUT and renamed into place,
so a failed export leaves nothing; an existing OUT is refused, never overwritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from s2s_jax.checkpointing import CheckpointError
from s2s_jax.config import ConfigError
from s2s_jax.export.workdir import ExportError, Trained, check_output, load, staged
from s2s_jax.models.registry import describe

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError)
PROVENANCE = "s2s_export.json"
BENCH = "pip install 's2s_jax[bench]'"


def _need(packages: tuple[str, ...], target: str, install: str) -> None:
    """Raises ExportError in one line when an optional package of ``target`` is missing."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"--to {target} needs {', '.join(missing)}: {install}.")


def _provenance(directory: Path, trained: Trained, target: str, **extra) -> None:
    info = {
        "target": target,
        "workdir": str(trained.workdir.resolve()),
        "step": trained.step,
        "model": describe(trained.model_config),
        **extra,
    }
    (directory / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")


def write_hf_marian(directory: Path, trained: Trained) -> None:
    """The Marian model, its tokenizer and ``s2s_export.json``, into ``directory``."""
    from s2s_jax.export.marian import save_marian

    c, decode = trained.components, trained.components.decode_config
    save_marian(
        directory, trained.model_config, trained.params, c.data.src_vocab, c.data.tgt_vocab,
        num_beams=decode.beam_size if decode.method == "beam" else 1,
    )  # fmt: skip
    _provenance(directory, trained, "hf-marian")


def export_hf_marian(args) -> None:
    from s2s_jax.export.marian import check_mappable

    _need(("torch", "transformers"), "hf-marian", BENCH)
    trained = load(args.workdir, check_mappable)
    with staged(args.out) as directory:
        write_hf_marian(directory, trained)


def export_ct2(args) -> None:
    from s2s_jax.export.marian import check_mappable

    _need(("torch", "transformers", "ctranslate2"), "ct2", BENCH)
    from s2s_jax.export import ct2

    trained = load(args.workdir, check_mappable)
    with staged(args.out) as directory, tempfile.TemporaryDirectory() as scratch:
        hf_dir = Path(scratch, "hf")
        hf_dir.mkdir()
        write_hf_marian(hf_dir, trained)
        # Into the (empty) staging directory, which CTranslate2 replaces with its own.
        ct2.convert(hf_dir, directory, quantization=args.quantization, force=True)
        _provenance(directory, trained, "ct2", quantization=args.quantization or "float32")


def export_stablehlo(args) -> None:
    # jax.export serializes with flatbuffers, which jax does not install.
    _need(("flatbuffers",), "stablehlo", "pip install flatbuffers")
    from s2s_jax.export import stablehlo

    trained = load(args.workdir, stablehlo.check_exportable)
    platforms = tuple(args.platforms.split(",")) if args.platforms else None
    with staged(args.out) as directory:
        stablehlo.write(
            directory, trained, batch=args.batch, src_len=args.src_len,
            beam_size=args.beam_size, alpha=args.alpha, platforms=platforms,
        )  # fmt: skip
        _provenance(directory, trained, "stablehlo")


TARGETS = {"hf-marian": export_hf_marian, "ct2": export_ct2, "stablehlo": export_stablehlo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s export", description="Write a trained workdir's model for serving tools."
    )
    parser.add_argument("--workdir", required=True, help="trained run directory")
    parser.add_argument("--to", required=True, choices=sorted(TARGETS), help="export format")
    parser.add_argument("out", help="output directory (must not exist)")
    parser.add_argument(
        "--quantization", help="ct2: CTranslate2 weight type, e.g. int8 (default float32)"
    )
    stablehlo = parser.add_argument_group("stablehlo")
    stablehlo.add_argument("--batch", type=int, default=32, help="sources per call (default 32)")
    stablehlo.add_argument(
        "--src-len", type=int, help="source ids per row, EOS included (default: largest bucket)"
    )
    stablehlo.add_argument("--beam-size", type=int, default=4, help="beam width (default 4)")
    stablehlo.add_argument("--alpha", type=float, help="GNMT length penalty (default: eval.alpha)")
    stablehlo.add_argument(
        "--platforms", help="comma-separated lowering platforms, e.g. cpu,cuda (default: this one)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``s2s export``; returns the exit status (0, or 2 after a one-line error)."""
    args = build_parser().parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's routine read-only warnings
    try:
        check_output(args.out)  # before anything is loaded
        TARGETS[args.to](args)
    except USER_ERRORS as e:
        if os.environ.get("S2S_DEBUG"):
            raise
        print(f"s2s export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
