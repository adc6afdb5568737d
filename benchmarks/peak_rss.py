"""Peak resident memory (RSS) of one training system, measured in a process of its own.

    python -m benchmarks.peak_rss --workload W1 --system torch [--tiny] [--steps 6]

The child builds one system of ``training_systems`` (importing only what that system needs),
runs ``--steps`` train steps and prints one JSON line: its own peak RSS (imports, model,
optimizer state, s2s_jax's XLA compile, the steps), the frameworks it loaded, and whether the
system is a peer. ``compare.py --peak-rss`` runs one child per system, one after another and
never while timing, and turns the results into "peak_rss" rows with ``row``.

The peak is the kernel's high-water mark of this process image (``VmHWM`` in
``/proc/self/status``). ``ru_maxrss`` would not do on Linux: it survives ``exec``, so a child
that ``subprocess`` starts (vfork, then exec) reports at least its parent's peak; it is kept in
the JSON as ``ru_maxrss_bytes`` for reference, and used where there is no ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peers, report, training_systems
from s2s_jax import host_memory

REPO_ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("jax", "torch", "transformers", "ctranslate2", "tensorflow")
DEFAULT_STEPS = 6  # compare.py's defaults: 2 warm-up steps + the 4 steps of one timed round
CHILD_TIMEOUT_S = 900.0  # generous: one system built, compiled and stepped at full size
STDERR_TAIL_LINES = 20
SOURCE = "peak_rss: peak RSS of a separate process per system, run after the timing (peak_rss.py)."


class ChildError(RuntimeError):
    """A peak RSS child failed, timed out or printed no result."""


def ru_maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (on Linux: inherited across exec)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image so far, in bytes.

    ``VmHWM`` of ``/proc/self/status`` (starts afresh at exec); ``ru_maxrss`` without ``/proc``.
    """
    status = Path("/proc/self/status")
    if not status.exists():
        return ru_maxrss_bytes()
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"Unexpected VmHWM unit in /proc/self/status: {line!r}.")
            return int(value) * 1024
    raise ValueError("/proc/self/status has no VmHWM line; cannot read the peak RSS.")


def measure(workload: str, system: str, *, tiny: bool, steps: int) -> dict:
    """Builds one system in this process, runs ``steps`` train steps, returns the result dict.

    Returns:
      ``{workload, system, peer, tiny, steps, peak_rss_bytes, ru_maxrss_bytes, frameworks}``;
      ``frameworks`` lists which of ``FRAMEWORKS`` the process imported.
    """
    if steps < 1:
        raise ValueError(f"Need steps >= 1 to measure a train step, got {steps}.")
    entry = training_systems.lookup(workload, system)
    absent = peers.missing(entry.peer) if entry.peer else []
    if absent:
        raise ValueError(peers.skip_message(entry.peer, absent))
    built = entry.build(tiny, training_systems.batches(workload, tiny))
    for _ in range(steps):
        built.run_once()
    return {
        "workload": workload, "system": system, "peer": built.peer, "tiny": tiny, "steps": steps,
        "peak_rss_bytes": peak_rss_bytes(), "ru_maxrss_bytes": ru_maxrss_bytes(),
        "frameworks": [name for name in FRAMEWORKS if name in sys.modules],
    }  # fmt: skip


def row(result: dict) -> report.Row:
    """The "peak_rss" row (MiB, lower is better) of a child's result."""
    loaded, steps = ", ".join(result["frameworks"]) or "no framework", result["steps"]
    return report.Row(
        workload=result["workload"], system=result["system"], metric="peak_rss",
        value=result["peak_rss_bytes"] / 2**20, unit="MiB", reference=result["peer"],
        note=f"own process ({loaded}); build + {steps} train step{'s' * (steps != 1)}",
    )  # fmt: skip


def child_argv(workload: str, system: str, *, tiny: bool, steps: int) -> list[str]:
    """The command line of the child that measures one system."""
    argv = [sys.executable, "-m", "benchmarks.peak_rss", "--workload", workload]
    return argv + ["--system", system, "--steps", str(steps)] + (["--tiny"] if tiny else [])


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = (text or "").strip().splitlines()[-STDERR_TAIL_LINES:]
    if not lines:
        return " (no stderr)"
    return "; stderr tail:\n    " + "\n    ".join(lines)


def launch(argv: list[str], what: str, timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Runs a child command from the repository root; returns the JSON of its last stdout line.

    Args:
      argv: the command (``child_argv``).
      what: names the child in errors, e.g. ``"W1/torch"``.
      timeout: seconds before the child is killed.

    Raises:
      ChildError: naming ``what``, with the tail of the child's stderr, if the child exits
        non-zero, runs past ``timeout`` or prints no JSON.
    """
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise ChildError(
            f"Peak RSS child {what} timed out after {timeout:g} s and was killed{_tail(err.stderr)}"
        ) from None
    if done.returncode != 0:
        raise ChildError(
            f"Peak RSS child {what} failed with exit code {done.returncode}{_tail(done.stderr)}"
        )
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise ChildError(
            f"Peak RSS child {what} printed no JSON result (stdout: {done.stdout[-500:]!r})"
            f"{_tail(done.stderr)}"
        ) from None


def run_child(
    workload: str, system: str, *, tiny: bool, steps: int, timeout: float = CHILD_TIMEOUT_S
) -> dict:
    """``measure`` in a fresh child process: that system's own peak RSS (see ``launch``)."""
    argv = child_argv(workload, system, tiny=tiny, steps=steps)
    return launch(argv, f"{workload}/{system}", timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workload",
        type=str.upper,
        required=True,
        choices=list(training_systems.SYSTEMS),
        help="training workload",
    )
    parser.add_argument(
        "--system", required=True, help="system of the workload, e.g. s2s_jax, torch, hf_marian"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"train steps after building (default {DEFAULT_STEPS})",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke runs, tests)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Measures one system; prints its result as one JSON line on stdout and returns it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        entry = training_systems.lookup(args.workload, args.system)
    except ValueError as err:
        parser.error(str(err))
    absent = peers.missing(entry.peer) if entry.peer else []
    if absent:
        parser.error(peers.skip_message(entry.peer, absent))
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}.")
    host_memory.configure()  # as compare.py, for every system
    # As compare.py: a persistent compilation cache would turn the compile into a read.
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    if "jax" in sys.modules:  # called in a process that has imported JAX already
        sys.modules["jax"].config.update("jax_enable_compilation_cache", False)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
        result = measure(args.workload, args.system, tiny=args.tiny, steps=args.steps)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
