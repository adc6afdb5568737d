"""Tests for s2s_jax.data.tasks."""

import dataclasses
import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from s2s_jax.data.tasks import TASKS, TaskConfig, make_splits, task_vocab

SMALL = {"min_length": 2, "max_length": 6, "num_train": 300, "num_eval": 50, "seed": 3}
# Prints a digest of the splits so another process (with another hash seed) can be compared;
# the repr of small float32 arrays shows every value to 8 digits.
DIGEST_SCRIPT = (
    "import hashlib; from s2s_jax.data.tasks import TaskConfig, make_splits; "
    "print(hashlib.sha256(repr(make_splits(TaskConfig(**{cfg}))).encode()).hexdigest())"
)


TEXT_TASKS = sorted(name for name, task in TASKS.items() if not task.input_features)


def _cfg(task, **overrides):
    return TaskConfig(task=task, **{**SMALL, **overrides})


def _comparable(split):
    """A split with frames as (shape, bytes), so splits compare with == (bitwise for floats)."""
    frames = lambda x: x if isinstance(x, str) else (x.shape, x.tobytes())
    return [(frames(e["inputs"]), e["targets"]) for e in split]


def _hidden(example):
    """The source string a target is a function of (noisy_digits: the digits under the noise)."""
    inputs = example["inputs"]
    return inputs if isinstance(inputs, str) else example["targets"][::-1]


def _text_pairs(split):
    return [(e["inputs"], e["targets"]) for e in split]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_deterministic(task):
    cfg = _cfg(task)
    assert list(map(_comparable, make_splits(cfg))) == list(map(_comparable, make_splits(cfg)))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_seed_changes_splits(task):
    first, second = make_splits(_cfg(task, seed=1)), make_splits(_cfg(task, seed=2))
    assert list(map(_comparable, first)) != list(map(_comparable, second))


@pytest.mark.parametrize("task", ["addition", "noisy_digits"])
def test_splits_identical_in_another_process(task):
    cfg = dataclasses.asdict(_cfg(task))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT.format(cfg=cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    here = hashlib.sha256(repr(make_splits(TaskConfig(**cfg))).encode()).hexdigest()
    assert result.stdout.strip() == here


@pytest.mark.parametrize("task", ["reverse", "noisy_digits"])
def test_eval_split_does_not_depend_on_num_train(task):
    _, small = make_splits(_cfg(task, num_train=10))
    _, large = make_splits(_cfg(task, num_train=1000))
    assert _comparable(small) == _comparable(large)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_sizes_distinct_eval_and_held_out_train(task):
    train, evals = make_splits(_cfg(task))
    assert (len(train), len(evals)) == (SMALL["num_train"], SMALL["num_eval"])
    eval_sources = [_hidden(e) for e in evals]
    assert len(set(eval_sources)) == len(eval_sources)
    assert not {_hidden(e) for e in train} & set(eval_sources)


def test_held_out_when_eval_covers_much_of_the_space():
    # 110 sources of length 1..2, 55 held out: train must avoid every one of them.
    cfg = _cfg("copy", min_length=1, max_length=2, num_eval=55, num_train=2000)
    train, evals = make_splits(cfg)
    assert len({e["inputs"] for e in evals}) == 55
    assert not {e["inputs"] for e in train} & {e["inputs"] for e in evals}


@pytest.mark.parametrize("task", ["reverse", "copy", "sort"])
def test_digit_sources_have_lengths_in_range(task):
    train, evals = make_splits(_cfg(task))
    for source, _ in _text_pairs(train + evals):
        assert SMALL["min_length"] <= len(source) <= SMALL["max_length"]
        assert source.isdigit()
    # Leading zeros are legitimate digit strings and must occur over 350 samples.
    assert any(s.startswith("0") for s, _ in _text_pairs(train))


@pytest.mark.parametrize(
    ("task", "solve"),
    [("reverse", lambda s: s[::-1]), ("copy", lambda s: s), ("sort", lambda s: "".join(sorted(s)))],
)
def test_digit_targets_are_correct(task, solve):
    train, evals = make_splits(_cfg(task))
    for source, target in _text_pairs(train + evals):
        assert target == solve(source)


def test_sort_target_is_ascending_permutation():
    train, _ = make_splits(_cfg("sort"))
    for source, target in _text_pairs(train):
        digits = np.array([int(c) for c in target])
        assert np.all(np.diff(digits) >= 0)
        assert sorted(source) == sorted(target)


def test_addition_targets_are_correct_sums():
    train, evals = make_splits(_cfg("addition", min_length=1, max_length=20))
    for source, target in _text_pairs(train + evals):
        a, b = source.split("+")
        assert int(target) == int(a) + int(b)
        assert target == str(int(target))


def test_addition_operands_have_lengths_in_range_without_leading_zeros():
    train, _ = make_splits(_cfg("addition", min_length=1, max_length=3, num_train=2000))
    operands = [x for source, _ in _text_pairs(train) for x in source.split("+")]
    for x in operands:
        assert 1 <= len(x) <= 3
        assert x == "0" or not x.startswith("0")
    assert "0" in operands  # the number 0 is a valid 1-digit operand


@pytest.mark.parametrize("task", sorted(TASKS))
def test_vocab_covers_text_sources_and_targets(task):
    vocab = task_vocab(task)
    train, evals = make_splits(_cfg(task))
    for example in train + evals:
        texts = [example["targets"]]
        if isinstance(example["inputs"], str):
            texts.append(example["inputs"])
        for text in texts:
            assert vocab.decode(vocab.encode(text)) == text


@pytest.mark.parametrize("task", ["reverse", "noisy_digits"])
def test_sample_one_example(task):
    example = TASKS[task].sample(np.random.default_rng(0), 4, 4)
    assert len(example["inputs"]) == 4
    assert example["targets"] == _hidden(example)[::-1]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task": "multiply"}, r"Unknown task 'multiply'.*addition.*copy.*reverse.*sort"),
        ({"min_length": 7, "max_length": 6}, "min_length <= max_length"),
        ({"min_length": 0}, "1 <= min_length"),
        ({"num_eval": -1}, "num_eval must be >= 0"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
        ({"noise_std": float("nan")}, "noise_std must be >= 0"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_splits(TaskConfig(**{**SMALL, **overrides}))


def test_unknown_task_vocab_raises():
    with pytest.raises(ValueError, match="valid tasks"):
        task_vocab("nope")


@pytest.mark.parametrize(
    ("task", "lengths", "num_eval"), [("addition", (1, 1), 1000), ("reverse", (1, 2), 56)]
)
def test_too_small_source_space_raises(task, lengths, num_eval):
    cfg = _cfg(task, min_length=lengths[0], max_length=lengths[1], num_eval=num_eval)
    with pytest.raises(ValueError, match="too few to hold out.*Lower num_eval or raise max_length"):
        make_splits(cfg)


def _one_hot_digits(frames):
    return "".join(str(d) for d in frames.argmax(axis=1))


def test_noisy_digits_frames_and_reversed_targets():
    train, evals = make_splits(_cfg("noisy_digits", noise_std=0.0))
    assert TASKS["noisy_digits"].input_features == 10
    for example in train + evals:
        frames = example["inputs"]
        assert frames.dtype == np.float32 and frames.shape[1] == 10
        assert SMALL["min_length"] <= len(frames) <= SMALL["max_length"]
        # Without noise every frame is exactly the one-hot of its digit.
        np.testing.assert_array_equal(frames, np.eye(10, dtype=np.float32)[frames.argmax(axis=1)])
        assert example["targets"] == _one_hot_digits(frames)[::-1]


def test_noisy_digits_noise_level_and_hidden_digits():
    std = 0.3
    clean = make_splits(_cfg("noisy_digits", noise_std=0.0))
    noisy = make_splits(_cfg("noisy_digits", noise_std=std))
    residuals = []
    for a, b in zip(clean[0] + clean[1], noisy[0] + noisy[1], strict=True):
        assert a["targets"] == b["targets"]  # the noise leaves the hidden digits alone
        residuals.append(b["inputs"] - a["inputs"])
    # Each split draws its noise from a stream of its own.
    n = SMALL["min_length"]
    assert not np.allclose(residuals[0][:n], residuals[len(clean[0])][:n])
    noise = np.concatenate(residuals)
    # ~14k draws: the std estimate is within ~0.002 of the truth; the mean within ~0.003.
    assert abs(noise.std() - std) < 0.01 and abs(noise.mean()) < 0.01
    # Non-trivial but learnable: the best possible per-frame guess (argmax) is right ~94% of the
    # time at 0.3 (~1400 frames here: +-0.6%).
    digits = np.concatenate([e["inputs"].argmax(axis=1) for e in clean[0] + clean[1]])
    guesses = np.concatenate([e["inputs"].argmax(axis=1) for e in noisy[0] + noisy[1]])
    assert 0.9 < np.mean(guesses == digits) < 0.98


def test_fifty_thousand_reversals_are_fast():
    cfg = TaskConfig(task="reverse", num_train=50_000, num_eval=1000)
    start = time.perf_counter()
    train, _ = make_splits(cfg)
    elapsed = time.perf_counter() - start
    assert len(train) == 50_000
    # ~0.05 s on one core; 2 s leaves room for a busy shared machine.
    assert elapsed < 2.0
