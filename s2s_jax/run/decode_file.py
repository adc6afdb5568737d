"""`s2s decode` on files and streams: every input line gets exactly one output, in input order.

    read_lines     bytes -> numbered lines; a line that is not UTF-8 is reported, not fatal
    _Prefetch      reads on a thread; a window is the lines that have arrived (<= --window)
    decode_window  one window, decoded sorted by length; per-line problems kept per line
    WRITERS        text | nbest | jsonl
    decode_stream  windows -> writer, in order, flushed per window; progress bar; summary

A window is whatever input has arrived when the previous one is done, so a file is decoded in
full windows (lines of similar length share a batch) while a pipe fed one line at a time gets
each answer back at once. Empty lines give empty outputs; a line that cannot be decoded is
reported on stderr with its number and gives an empty output, and the summary counts it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TextIO

import numpy as np
from tqdm import tqdm

from s2s_jax.run.inference import EncodedLine, Hypothesis, LineError, SourceTooLong

FORMATS = ("text", "nbest", "jsonl")
TOO_LONG = ("error", "truncate")
DEFAULT_WINDOW = 256  # lines sorted together: 8 decode calls of 32 rows


class InputError(ValueError):
    """The input or output file cannot be used (missing, a directory, unreadable)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How ``decode_stream`` decodes and writes.

    Attributes:
      format: one of ``FORMATS``.
      too_long: what a line longer than the model takes gets (``TOO_LONG``): "error" (an empty
        output, reported) or "truncate" (its first tokens are decoded, with a warning).
      attention: jsonl only: each hypothesis carries its cross-attention weights.
      window: the most lines sorted by length together.
      progress: show a progress bar on stderr; None: when stderr is a terminal.
    """

    format: str = "text"
    too_long: str = "error"
    attention: bool = False
    window: int = DEFAULT_WINDOW
    progress: bool | None = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown --format {self.format!r}; choose {', '.join(FORMATS)}")
        if self.too_long not in TOO_LONG:
            raise ValueError(f"unknown --too-long {self.too_long!r}; choose {', '.join(TOO_LONG)}")
        if self.attention and self.format != "jsonl":
            raise ValueError("--attention needs --format jsonl (the weights go into its records)")
        if self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")


@dataclasses.dataclass(frozen=True)
class RawLine:
    number: int  # 1-based
    text: str  # without the line break; undecodable bytes replaced when ``error`` is set
    error: str | None = None


@dataclasses.dataclass
class LineResult:
    number: int
    source: str
    hypotheses: list[Hypothesis] = dataclasses.field(default_factory=list)  # best first
    error: str | None = None  # why the line was not decoded (its output is empty)
    warning: str | None = None  # decoded, but e.g. truncated
    encoded: EncodedLine | None = None


def open_input(path: str | None) -> BinaryIO:
    """``path`` opened for binary reading, or stdin's bytes when None.

    Raises:
      InputError: one line saying why the file cannot be read.
    """
    if path is None:
        if hasattr(sys.stdin, "buffer"):
            return sys.stdin.buffer
        return io.BytesIO(sys.stdin.read().encode("utf-8"))  # a text-only stand-in (tests)
    try:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except IsADirectoryError:
        raise InputError(f"--input {path} is a directory, not a file of source lines") from None
    except FileNotFoundError:
        raise InputError(f"--input {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read --input {path}: {e.strerror or e}") from None


def open_output(path: str | None) -> TextIO:
    """``path`` opened for writing UTF-8 text, or stdout when None.

    Raises:
      InputError: one line saying why the file cannot be written.
    """
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as e:
        raise InputError(f"cannot write --output {path}: {e.strerror or e}") from None


def read_lines(stream: BinaryIO) -> Iterator[RawLine]:
    """Numbered lines of a byte stream, read as they arrive (a pipe is not read to its end).

    Lines end at "\\n" (a "\\r" before it is dropped too); a UTF-8 byte-order mark on the first
    line is dropped. A line that is not UTF-8 comes with an error naming the first bad byte.
    """
    for number, raw in enumerate(stream, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            yield RawLine(number, raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", errors="replace")
            error = f"not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)"
            yield RawLine(number, text, error)


_END = object()


class _Prefetch:
    """Reads lines on a thread into a bounded queue, so reading overlaps decoding."""

    def __init__(self, lines: Iterator[RawLine], capacity: int):
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(lines,), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, lines: Iterator[RawLine]) -> None:
        try:
            for line in lines:
                if not self._put(line):
                    return
            self._put(_END)
        except Exception as e:  # a read error surfaces in the decoding thread
            self._put(e)

    def windows(self, size: int) -> Iterator[list[RawLine]]:
        """Lists of 1..size lines: the first waited for, the rest whatever has arrived."""
        done = False
        while not done:
            window, item = [], self._queue.get()
            while True:
                if item is _END or isinstance(item, Exception):
                    done = True
                    break
                window.append(item)
                if len(window) == size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if window:
                yield window
            if isinstance(item, Exception):
                raise item

    def close(self) -> None:
        self._stop.set()


def decode_window(translator: Any, lines: list[RawLine], options: Options) -> list[LineResult]:
    """Decodes a window of lines; returns one result per line, in the same order.

    Non-empty lines that encode are decoded together, shortest first, so rows that finish
    together share a batch; the translator pads them to its bucket widths.
    """
    results = [LineResult(line.number, line.text, error=line.error) for line in lines]
    todo = []
    for result in results:
        if result.error or not result.source.strip():
            continue  # not UTF-8: reported; empty (or blank) in, empty out
        try:
            result.encoded = translator.encode(
                result.source, truncate=options.too_long == "truncate"
            )
        except SourceTooLong as e:
            result.error = f"{e}; --too-long truncate decodes its first tokens"
            continue
        except LineError as e:
            result.error = str(e)
            continue
        if result.encoded.truncated_from:
            kept = len(result.encoded.ids) - 1
            result.warning = (
                f"{result.encoded.truncated_from} tokens, more than this model takes: "
                f"decoded its first {kept} (--too-long truncate)"
            )
        todo.append(result)
    todo.sort(key=lambda r: len(r.encoded.ids))
    decoded = translator.decode([r.encoded.ids for r in todo], attention=options.attention)
    for result, hypotheses in zip(todo, decoded, strict=True):
        result.hypotheses = hypotheses
    return results


def _text(result: LineResult, translator: Any) -> str:
    return (result.hypotheses[0].text if result.hypotheses else "") + "\n"


def _nbest(result: LineResult, translator: Any) -> str:
    return "".join(
        f"{result.number}\t{rank}\t{h.score:.4f}\t{h.text}\n"
        for rank, h in enumerate(result.hypotheses, start=1)
    )


def _jsonl(result: LineResult, translator: Any) -> str:
    record: dict[str, Any] = {"line": result.number, "source": result.source}
    for key in ("error", "warning"):
        if getattr(result, key):
            record[key] = getattr(result, key)
    with_attention = any(h.attention is not None for h in result.hypotheses)
    if with_attention:
        record["source_tokens"] = translator.pieces(result.encoded.ids, "source")
    hypotheses = []
    for h in result.hypotheses:
        entry: dict[str, Any] = {"text": h.text, "score": round(h.score, 6), "tokens": h.tokens}
        if h.attention is not None:
            entry["target_tokens"] = translator.pieces(h.ids, "target")
            entry["attention"] = np.round(h.attention.astype(np.float64), 5).tolist()
        hypotheses.append(entry)
    record["hypotheses"] = hypotheses
    return json.dumps(record, ensure_ascii=False) + "\n"


# format -> (result, translator) -> the text written for one input line
WRITERS: dict[str, Callable[[LineResult, Any], str]] = {
    "text": _text,
    "nbest": _nbest,
    "jsonl": _jsonl,
}
assert tuple(WRITERS) == FORMATS


@dataclasses.dataclass
class Summary:
    """Counts of one ``decode_stream``; ``failed`` holds the numbers of lines not decoded."""

    lines: int = 0
    decoded: int = 0
    empty: int = 0
    truncated: int = 0
    failed: list[int] = dataclasses.field(default_factory=list)
    target_tokens: int = 0  # of the best hypotheses, EOS included
    seconds: float = 0.0

    def add(self, result: LineResult) -> None:
        self.lines += 1
        if result.error:
            self.failed.append(result.number)
        elif result.encoded is None:
            self.empty += 1
        else:
            self.decoded += 1
            self.truncated += bool(result.warning)
            self.target_tokens += len(result.hypotheses[0].ids) if result.hypotheses else 0

    def describe(self) -> str:
        rate = self.lines / max(self.seconds, 1e-9)
        tokens = self.target_tokens / max(self.seconds, 1e-9)
        parts = [f"{self.decoded} decoded", f"{self.empty} empty"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        if self.failed:
            shown = ", ".join(map(str, self.failed[:10])) + (
                ", ..." if len(self.failed) > 10 else ""
            )
            parts.append(f"{len(self.failed)} failed (line {shown})")
        return (
            f"{self.lines} lines in {self.seconds:.1f} s ({rate:.1f} lines/s, {tokens:.0f} target "
            f"tokens/s): {', '.join(parts)}"
        )


def _report(result: LineResult, err: TextIO) -> None:
    if result.error:
        tqdm.write(f"s2s decode: line {result.number}: {result.error}; empty output", file=err)
    elif result.warning:
        tqdm.write(f"s2s decode: line {result.number}: warning: {result.warning}", file=err)


def decode_stream(
    translator: Any,
    source: BinaryIO,
    out: TextIO,
    options: Options = Options(),
    *,
    err: TextIO | None = None,
) -> Summary:
    """Decodes every line of ``source`` into ``out``; per-line problems and a summary to ``err``.

    Args:
      translator: ``encode(line, truncate=) -> EncodedLine`` (raises ``LineError``),
        ``decode(ids_list, attention=) -> [[Hypothesis]]`` and ``pieces(ids, side)``, e.g.
        ``inference.Translator``.
      source: a byte stream (a file, or stdin's buffer); read as it arrives.
      out: where the outputs go, flushed after every window.
      options: format, too-long policy, attention, window, progress.
      err: per-line reports, the progress bar and the summary (default: stderr).

    Returns:
      The counts; ``failed`` is non-empty when some line got no output.
    """
    err = sys.stderr if err is None else err
    show = options.progress if options.progress is not None else err.isatty()
    write = WRITERS[options.format]
    summary, start = Summary(), time.perf_counter()
    prefetch = _Prefetch(read_lines(source), capacity=2 * options.window)
    bar = tqdm(desc="decode", unit=" lines", file=err, disable=not show, dynamic_ncols=True)
    try:
        for window in prefetch.windows(options.window):
            for result in decode_window(translator, window, options):
                out.write(write(result, translator))
                _report(result, err)
                summary.add(result)
            out.flush()
            summary.seconds = time.perf_counter() - start
            bar.update(len(window))
            bar.set_postfix_str(f"{summary.target_tokens / summary.seconds:.0f} tgt tok/s")
    finally:
        prefetch.close()
        bar.close()
    summary.seconds = time.perf_counter() - start
    print(f"s2s decode: {summary.describe()}", file=err)
    return summary
