"""Synthetic seq2seq tasks and their train/eval splits.

Text tasks (reverse, copy, sort, addition) map a character source to a character target.
``noisy_digits`` has float sources: each digit of a hidden digit string becomes a frame, a
one-hot of the digit plus Gaussian noise (``[length, 10]`` float32), and the target is the
digit string reversed, so a model must both denoise the frames and reorder them.

Every task's target is a pure function of its (hidden) source string, so holding those strings
out of training is enough to make the eval split a test of generalisation rather than
memorisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from s2s_jax.data.types import Example
from s2s_jax.data.vocab import CharVocab

DIGITS = "0123456789"

# Independent random streams per split: the eval split must not change when num_train does. The
# salt keeps them apart from other users of the run seed (TrainBatches seeds epochs [seed, e]).
_SPLIT_SALT = 0x5EED_DA7A
_EVAL_STREAM = 0
_TRAIN_STREAM = 1
_NOISE_STREAM = 2  # frames of float-source tasks: [seed, salt, _NOISE_STREAM, split stream]
# Draw a little more than the expected need so a split usually fills in one round.
_OVERDRAW = 1.1
_MIN_DRAW = 64
# Frames of noisy_digits: a frame is misread when some wrong component's noise beats the true
# one's by 1, P ~ 9 * P(N(0, 2 std^2) > 1). At 0.15 that is ~1e-5 per frame, so a 20-digit
# string is read right 99.98% of the time and >= 99% exact match is reachable; at 0.2 the
# ceiling would be ~96.5% at 20 digits, and at 0.3 (~92% per frame) under 20%.
DEFAULT_NOISE_STD = 0.15


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which synthetic task to generate and how much of it.

    Attributes:
      task: a key of `TASKS`.
      min_length: shortest source (for addition: fewest digits per operand), >= 1.
      max_length: longest source (for addition: most digits per operand), >= min_length.
      num_train: number of training pairs (sources may repeat).
      num_eval: number of eval pairs (distinct sources, never seen in training).
      seed: non-negative seed; the same config always yields the same splits.
      noise_std: float-source tasks: std of the Gaussian noise added to every one-hot frame.
    """

    task: str = "reverse"
    min_length: int = 5
    max_length: int = 20
    num_train: int = 20000
    num_eval: int = 1000
    seed: int = 0
    noise_std: float = DEFAULT_NOISE_STD

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.min_length < 1 or self.min_length > self.max_length:
            raise ValueError(
                f"Need 1 <= min_length <= max_length, got min_length={self.min_length}, "
                f"max_length={self.max_length}."
            )
        for name in ("num_train", "num_eval", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"TaskConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if not self.noise_std >= 0:
            raise ValueError(f"TaskConfig.noise_std must be >= 0, got {self.noise_std}.")


@dataclasses.dataclass(frozen=True)
class Task:
    """A synthetic task: its alphabet, a source sampler and the source -> target function.

    Attributes:
      alphabet: every character that may appear in a target (and in a text source).
      sample_sources: `(rng, num, min_length, max_length) -> list[str]`, `num` random sources
        (vectorised: one call per split, not per example, keeps 50k examples well under a second).
      target: the correct output for a source string.
      num_sources: `(min_length, max_length) -> int`, how many distinct sources exist.
      frames: None for text sources; else `(rng, sources, noise_std) -> list[np.ndarray]`,
        the model's `[len(source), input_features]` float32 input for each source string.
      input_features: 0 for text sources; the size of a frame.
    """

    alphabet: str
    sample_sources: Callable[[np.random.Generator, int, int, int], list[str]]
    target: Callable[[str], str]
    num_sources: Callable[[int, int], int]
    frames: Callable[[np.random.Generator, list[str], float], list[np.ndarray]] | None = None
    input_features: int = 0

    def examples(
        self, rng: np.random.Generator, sources: list[str], noise_std: float
    ) -> list[Example]:
        """The examples of `sources`; `rng` draws the noise of float frames."""
        inputs = sources if self.frames is None else self.frames(rng, sources, noise_std)
        return [
            {"inputs": x, "targets": self.target(s)} for x, s in zip(inputs, sources, strict=True)
        ]

    def sample(
        self,
        rng: np.random.Generator,
        min_length: int,
        max_length: int,
        noise_std: float = DEFAULT_NOISE_STD,
    ) -> Example:
        """Draws one example."""
        return self.examples(rng, self.sample_sources(rng, 1, min_length, max_length), noise_std)[0]


def _digit_rows(rng: np.random.Generator, lengths: np.ndarray, width: int) -> list[str]:
    """Random digit strings with the given lengths (leading zeros allowed)."""
    digits = rng.integers(0, 10, size=(len(lengths), width), dtype=np.uint8)
    return _rows_to_strings(digits, lengths)


def _numbers(rng: np.random.Generator, lengths: np.ndarray, width: int) -> list[str]:
    """Random decimal numbers with exactly `lengths` digits; no leading zero except "0"."""
    digits = rng.integers(0, 10, size=(len(lengths), width), dtype=np.uint8)
    leading = rng.integers(1, 10, size=len(lengths), dtype=np.uint8)
    digits[:, 0] = np.where(lengths > 1, leading, digits[:, 0])
    return _rows_to_strings(digits, lengths)


def _rows_to_strings(digits: np.ndarray, lengths: np.ndarray) -> list[str]:
    # One bytes -> str conversion for the whole matrix, then slicing, beats per-row joins.
    width = digits.shape[1]
    text = (digits + ord("0")).astype(np.uint8).tobytes().decode("ascii")
    return [text[i * width : i * width + n] for i, n in enumerate(lengths.tolist())]


def _sample_digit_strings(rng: np.random.Generator, num: int, lo: int, hi: int) -> list[str]:
    lengths = rng.integers(lo, hi + 1, size=num)
    return _digit_rows(rng, lengths, hi)


def _sample_additions(rng: np.random.Generator, num: int, lo: int, hi: int) -> list[str]:
    left = _numbers(rng, rng.integers(lo, hi + 1, size=num), hi)
    right = _numbers(rng, rng.integers(lo, hi + 1, size=num), hi)
    return [f"{a}+{b}" for a, b in zip(left, right, strict=True)]


def _noisy_one_hots(
    rng: np.random.Generator, sources: list[str], noise_std: float
) -> list[np.ndarray]:
    """Per digit string, `[len, 10]` float32 frames: the digits' one-hots plus N(0, noise_std²)."""
    if not sources:
        return []  # np.split would return one empty piece
    digits = np.frombuffer("".join(sources).encode("ascii"), dtype=np.uint8) - ord("0")
    frames = np.eye(len(DIGITS), dtype=np.float32)[digits]
    frames += noise_std * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.split(frames, np.cumsum([len(s) for s in sources])[:-1])


def _reverse(source: str) -> str:
    return source[::-1]


def _copy(source: str) -> str:
    return source


def _sort(source: str) -> str:
    return "".join(sorted(source))


def _add(source: str) -> str:
    a, b = source.split("+")
    return str(int(a) + int(b))


def _count_digit_strings(lo: int, hi: int) -> int:
    return sum(10**n for n in range(lo, hi + 1))


def _count_additions(lo: int, hi: int) -> int:
    operands = sum(10 if n == 1 else 9 * 10 ** (n - 1) for n in range(lo, hi + 1))
    return operands**2


TASKS: dict[str, Task] = {
    "reverse": Task(DIGITS, _sample_digit_strings, _reverse, _count_digit_strings),
    "copy": Task(DIGITS, _sample_digit_strings, _copy, _count_digit_strings),
    "sort": Task(DIGITS, _sample_digit_strings, _sort, _count_digit_strings),
    "addition": Task(DIGITS + "+", _sample_additions, _add, _count_additions),
    "noisy_digits": Task(
        DIGITS, _sample_digit_strings, _reverse, _count_digit_strings, _noisy_one_hots, len(DIGITS)
    ),
}


def get_task(name: str) -> Task:
    """Looks up a task by name; raises ValueError listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; valid tasks are {sorted(TASKS)}.")
    return TASKS[name]


def task_vocab(task: str) -> CharVocab:
    """The character vocabulary covering the task's targets (and text sources)."""
    return CharVocab(get_task(task).alphabet)


def make_splits(cfg: TaskConfig) -> tuple[list[Example], list[Example]]:
    """Generates the (train, eval) lists of examples for `cfg`.

    The eval split is drawn first from its own random stream and has distinct sources; train
    sources are drawn from a second stream and never equal an eval source (repeats within train
    are allowed). For float-source tasks "source" means the hidden digit string; each split's
    noise comes from a third stream of its own. The result depends only on `cfg`, in any process.

    Raises:
      ValueError: if fewer than `2 * num_eval` distinct sources exist for the length range, so
        holding out the eval sources would leave (almost) nothing to train on.
    """
    task = get_task(cfg.task)
    _check_source_space(task, cfg)
    eval_rng = np.random.default_rng([cfg.seed, _SPLIT_SALT, _EVAL_STREAM])
    train_rng = np.random.default_rng([cfg.seed, _SPLIT_SALT, _TRAIN_STREAM])
    eval_sources = _distinct_sources(task, eval_rng, cfg)
    train_sources = _held_out_sources(task, train_rng, cfg, frozenset(eval_sources))
    train = _examples(task, train_sources, cfg, _TRAIN_STREAM)
    return train, _examples(task, eval_sources, cfg, _EVAL_STREAM)


def _check_source_space(task: Task, cfg: TaskConfig) -> None:
    available = task.num_sources(cfg.min_length, cfg.max_length)
    # Holding out at most half the sources keeps rejection sampling of train sources cheap and
    # guarantees the eval draw of distinct sources terminates quickly.
    if cfg.num_eval > available // 2:
        raise ValueError(
            f"Task {cfg.task!r} with lengths {cfg.min_length}..{cfg.max_length} has only "
            f"{available} distinct sources: too few to hold out num_eval={cfg.num_eval} and "
            f"still leave training sources (at most {available // 2} may be held out). "
            "Lower num_eval or raise max_length."
        )


def _distinct_sources(task: Task, rng: np.random.Generator, cfg: TaskConfig) -> list[str]:
    seen: dict[str, None] = {}  # an ordered set: order must not depend on string hashing
    while len(seen) < cfg.num_eval:
        need = cfg.num_eval - len(seen)
        for source in task.sample_sources(rng, max(2 * need, _MIN_DRAW), *_lengths(cfg)):
            seen[source] = None
            if len(seen) == cfg.num_eval:
                break
    return list(seen)


def _held_out_sources(
    task: Task, rng: np.random.Generator, cfg: TaskConfig, excluded: frozenset[str]
) -> list[str]:
    sources: list[str] = []
    accept_rate = 1.0
    while len(sources) < cfg.num_train:
        need = cfg.num_train - len(sources)
        draw = int(need / accept_rate * _OVERDRAW) + _MIN_DRAW
        kept = [s for s in task.sample_sources(rng, draw, *_lengths(cfg)) if s not in excluded]
        accept_rate = max(len(kept) / draw, 0.01)
        sources.extend(kept)
    return sources[: cfg.num_train]


def _lengths(cfg: TaskConfig) -> tuple[int, int]:
    return cfg.min_length, cfg.max_length


def _examples(task: Task, sources: list[str], cfg: TaskConfig, stream: int) -> list[Example]:
    noise_rng = np.random.default_rng([cfg.seed, _SPLIT_SALT, _NOISE_STREAM, stream])
    return task.examples(noise_rng, sources, cfg.noise_std)
