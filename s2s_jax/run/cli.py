"""The `s2s` command: train, evaluate and decode.

s2s train    [--config experiments/X.py[:variant]] [--workdir DIR] [--config.a.b=v ...]
s2s evaluate --workdir DIR [--decode beam --beam-size 4]
s2s decode   --workdir DIR [--input FILE] [--format text|nbest|jsonl] [--beam-size 4 --nbest 3]

train, evaluate and decode keep compiled programs in JAX's persistent cache
(~/.cache/s2s_jax/xla; --compilation-cache DIR|off or S2S_JAX_COMPILATION_CACHE to change it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

from s2s_jax import host_memory
from s2s_jax.checkpointing import CheckpointError
from s2s_jax.config import DEFAULT_EXPERIMENT, ConfigError, load_train_config
from s2s_jax.run import compile_cache

# Errors that are the user's to fix: printed as one clear line, never as a traceback
# (set S2S_DEBUG=1 to see the traceback anyway).
USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError)
# Exit status: 0 done; 1 `s2s decode` finished but some lines failed; 2 an error (one line on
# stderr); 75 (EX_TEMPFAIL, "try again") `s2s train` stopped by a signal after checkpointing.
EXIT_STOPPED = 75
CACHED_COMMANDS = ("train", "evaluate", "decode")  # profile measures compile time: off there


def _add_cache_flag(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR|off",
        help=f"JAX's persistent compilation cache (default: {default})",
    )


def _add_decode_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", help="file with one source per line (default: stdin)")
    p.add_argument("--output", help="write the outputs here (default: stdout)")
    p.add_argument(
        "--format",
        help="text (best hypothesis per line; default), nbest (TSV: line, rank, score, text; "
        "the default with --nbest > 1) or jsonl (one record per line, with scores)",
    )
    p.add_argument("--nbest", type=int, help="the n best hypotheses per line (beam search)")
    p.add_argument(
        "--too-long",
        choices=("error", "truncate"),
        default="error",
        help="a line longer than the model's positions take: error (empty output, reported; "
        "default) or truncate (decode its first tokens, with a warning)",
    )
    p.add_argument(
        "--attention", action="store_true", help="jsonl: cross-attention weights per target token"
    )
    p.add_argument("--window", type=int, help="lines sorted by length together (default: 256)")
    p.add_argument(
        "--progress", action="store_true", help="progress bar on stderr (default: on a terminal)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an experiment (resumes if the workdir has one)")
    train.add_argument(
        "--config", default=DEFAULT_EXPERIMENT, help="experiment file, optionally ':variant'"
    )
    train.add_argument("--workdir", help="run directory (default: runs/<experiment name>)")
    _add_cache_flag(train, "$S2S_JAX_COMPILATION_CACHE or ~/.cache/s2s_jax/xla")
    for name, help_text in (
        ("evaluate", "evaluate the latest checkpoint of a workdir on its eval split"),
        ("decode", "decode source lines (stdin or --input) with a trained workdir"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--workdir", required=True)
        _add_cache_flag(p, "$S2S_JAX_COMPILATION_CACHE or ~/.cache/s2s_jax/xla")
        p.add_argument("--decode", choices=("greedy", "beam", "sample"), help="decoding method")
        p.add_argument("--beam-size", type=int, help="beam width (implies --decode beam if > 1)")
        p.add_argument("--alpha", type=float, help="GNMT length penalty for beam search")
        p.add_argument("--min-length", type=int, help="block EOS before this many tokens")
        p.add_argument(
            "--no-repeat-ngram", type=int, help="never repeat an n-gram of this size (0: off)"
        )
        if name == "evaluate":
            p.add_argument("--split", help="TFDS data: the split to evaluate (e.g. test)")
            p.add_argument(
                "--max-examples",
                type=int,
                help="evaluate only the first N examples (default: the whole split)",
            )
        if name == "decode":
            _add_decode_flags(p)
            p.add_argument("--temperature", type=float, help="sampling temperature")
            p.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
            p.add_argument("--top-p", type=float, help="sample from the top-p probability mass")
            p.add_argument("--seed", type=int, help="sampling seed")
    profile = sub.add_parser(
        "profile",
        help="compile time, step time, FLOPs, MFU, memory (s2s profile --help for options)",
        add_help=False,
    )
    _add_cache_flag(profile, "off, so compile time is measured")
    sub.add_parser(
        "export",
        help="export a workdir for serving: hf-marian, ct2, stablehlo (s2s export --help)",
        add_help=False,
    )
    build = sub.add_parser("build-data", help="build a project dataset (TFDS, array_record)")
    build.add_argument("dataset", choices=sorted(DATASET_BUILDERS))
    build.add_argument("--data-dir", required=True, help="TFDS data_dir to write into")
    build.add_argument("--sword-path", help="SWORD module directory (bible)")
    return parser


def _build_bible(args) -> int:
    from s2s_jax.data import bible

    argv = ["--data-dir", args.data_dir]
    argv += ["--sword-path", args.sword_path] if args.sword_path else []
    return bible.main(argv)


DATASET_BUILDERS = {"bible": _build_bible}


def cmd_build_data(args, extra: list[str]) -> int:
    return DATASET_BUILDERS[args.dataset](args)


def cmd_train(args, extra: list[str]) -> int:
    from s2s_jax.run.train import train_and_evaluate

    config = load_train_config(args.config, extra)
    workdir = args.workdir or str(Path("runs") / config.name)
    metrics = train_and_evaluate(config, workdir)
    if not metrics:  # stopped by SIGTERM/SIGINT after saving a checkpoint: rerun to resume
        return EXIT_STOPPED
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}))
    return 0


SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")


def _check_decode_flags(args, method: str | None) -> None:
    """Refuses decoding flags out of range or that the chosen method would ignore."""
    flag = lambda name: "--" + name.replace("_", "-")
    if args.beam_size is not None and args.beam_size < 1:
        raise ValueError(f"--beam-size {args.beam_size}: must be >= 1 (1 is greedy).")
    if method == "greedy" and (args.beam_size or 1) > 1:
        raise ValueError(
            f"--decode greedy with --beam-size {args.beam_size}: greedy keeps one hypothesis; "
            "drop --beam-size or use --decode beam."
        )
    if args.alpha is not None and not (math.isfinite(args.alpha) and args.alpha >= 0):
        raise ValueError(f"--alpha {args.alpha}: must be a finite number >= 0 (GNMT, e.g. 0.6).")
    given = [name for name in SAMPLING_FLAGS if getattr(args, name, None) is not None]
    if given and method != "sample":
        raise ValueError(
            f"{', '.join(map(flag, given))} only apply to sampling: add --decode sample, or drop "
            "them."
        )
    checks = (
        ("temperature", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
        ("top_k", lambda v: v >= 0, "an integer >= 0 (0: off)"),
        ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("nbest", lambda v: v >= 1, "an integer >= 1"),
    )
    for name, ok, what in checks:
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise ValueError(f"{flag(name)} {value}: must be {what}.")


def _decode_overrides(args) -> dict:
    method = args.decode or ("beam" if (args.beam_size or 1) > 1 else None)
    _check_decode_flags(args, method)
    sampling = SAMPLING_FLAGS
    return {
        "method": method,
        "beam_size": args.beam_size,
        "alpha": args.alpha,
        "min_length": args.min_length,
        "no_repeat_ngram_size": args.no_repeat_ngram,
        **{k: getattr(args, k, None) for k in ("nbest", *sampling)},
    }


def cmd_evaluate(args, extra: list[str]) -> int:
    from s2s_jax.run.inference import evaluate_workdir

    result = evaluate_workdir(
        args.workdir, split=args.split, max_examples=args.max_examples, **_decode_overrides(args)
    )
    print(json.dumps({k: round(v, 6) for k, v in result.metrics.items()}))
    return 0


def cmd_decode(args, extra: list[str]) -> int:
    """Exit status 0: every line decoded (or empty); 1: some lines failed (reported)."""
    from s2s_jax.run import decode_file
    from s2s_jax.run.inference import Translator

    options = decode_file.Options(
        format=args.format or ("nbest" if (args.nbest or 1) > 1 else "text"),
        too_long=args.too_long,
        attention=args.attention,
        window=decode_file.DEFAULT_WINDOW if args.window is None else args.window,
        progress=args.progress or None,
    )
    with contextlib.ExitStack() as files:  # stdin and stdout stay open
        source = decode_file.open_input(args.input)
        if args.input:
            files.enter_context(source)
        out = decode_file.open_output(args.output)  # before loading: a bad path fails fast
        if args.output:
            files.enter_context(out)
        translator = Translator(args.workdir, **_decode_overrides(args))
        try:
            summary = decode_file.decode_stream(translator, source, out, options)
        except BrokenPipeError:  # e.g. `| head`: stop quietly, and keep the exit flush quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return 1 if summary.failed else 0


def cmd_profile(args, extra: list[str]) -> int:
    from s2s_jax.run import profile

    return profile.main(extra)


def cmd_export(args, extra: list[str]) -> int:
    from s2s_jax.export import command

    return command.main(extra)


COMMANDS = {
    "profile": cmd_profile,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "decode": cmd_decode,
    "build-data": cmd_build_data,
    "export": cmd_export,
}


def _configure_compilation_cache(args) -> None:
    """Before the first compile: on by default, off for profile unless its flag names a dir."""
    if args.command in CACHED_COMMANDS:
        compile_cache.configure(args.compilation_cache)
    elif args.command == "profile" and compile_cache.configure(args.compilation_cache or "off"):
        print(
            "s2s profile: compilation cache on: a cached step is loaded, not compiled, so its "
            "compile time reads low.",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    try:
        host_memory.configure()  # before JAX starts (S2S_JAX_HOST_MALLOC=reuse opts in)
    except ValueError as e:
        print(f"s2s: error: {e}", file=sys.stderr)
        return 2
    # Orbax reports routine events (e.g. opening a read-only checkpoint) as absl warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    args, extra = _parser().parse_known_args(argv)
    if extra and args.command not in ("train", "profile", "export"):
        print(f"s2s {args.command}: unrecognised arguments {' '.join(extra)}", file=sys.stderr)
        return 2
    _configure_compilation_cache(args)
    try:
        return COMMANDS[args.command](args, extra)
    except USER_ERRORS as e:
        if os.environ.get("S2S_DEBUG"):
            raise
        print(f"s2s {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
