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
# Prints a digest of the splits so another process (with another hash seed) can be compared.
DIGEST_SCRIPT = (
    "import hashlib; from s2s_jax.data.tasks import TaskConfig, make_splits; "
    "print(hashlib.sha256(repr(make_splits(TaskConfig(**{cfg}))).encode()).hexdigest())"
)


def _cfg(task, **overrides):
    return TaskConfig(task=task, **{**SMALL, **overrides})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_deterministic(task):
    cfg = _cfg(task)
    assert make_splits(cfg) == make_splits(cfg)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_seed_changes_splits(task):
    assert make_splits(_cfg(task, seed=1)) != make_splits(_cfg(task, seed=2))


def test_splits_identical_in_another_process():
    cfg = dataclasses.asdict(_cfg("addition"))
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


def test_eval_split_does_not_depend_on_num_train():
    _, small = make_splits(_cfg("reverse", num_train=10))
    _, large = make_splits(_cfg("reverse", num_train=1000))
    assert small == large


@pytest.mark.parametrize("task", sorted(TASKS))
def test_sizes_distinct_eval_and_held_out_train(task):
    train, evals = make_splits(_cfg(task))
    assert (len(train), len(evals)) == (SMALL["num_train"], SMALL["num_eval"])
    eval_sources = [s for s, _ in evals]
    assert len(set(eval_sources)) == len(eval_sources)
    assert not {s for s, _ in train} & set(eval_sources)


def test_held_out_when_eval_covers_much_of_the_space():
    # 110 sources of length 1..2, 55 held out: train must avoid every one of them.
    cfg = _cfg("copy", min_length=1, max_length=2, num_eval=55, num_train=2000)
    train, evals = make_splits(cfg)
    assert len({s for s, _ in evals}) == 55
    assert not {s for s, _ in train} & {s for s, _ in evals}


@pytest.mark.parametrize("task", ["reverse", "copy", "sort"])
def test_digit_sources_have_lengths_in_range(task):
    train, evals = make_splits(_cfg(task))
    for source, _ in train + evals:
        assert SMALL["min_length"] <= len(source) <= SMALL["max_length"]
        assert source.isdigit()
    # Leading zeros are legitimate digit strings and must occur over 350 samples.
    assert any(s.startswith("0") for s, _ in train)


@pytest.mark.parametrize(
    ("task", "solve"),
    [("reverse", lambda s: s[::-1]), ("copy", lambda s: s), ("sort", lambda s: "".join(sorted(s)))],
)
def test_digit_targets_are_correct(task, solve):
    train, evals = make_splits(_cfg(task))
    for source, target in train + evals:
        assert target == solve(source)


def test_sort_target_is_ascending_permutation():
    train, _ = make_splits(_cfg("sort"))
    for source, target in train:
        digits = np.array([int(c) for c in target])
        assert np.all(np.diff(digits) >= 0)
        assert sorted(source) == sorted(target)


def test_addition_targets_are_correct_sums():
    train, evals = make_splits(_cfg("addition", min_length=1, max_length=20))
    for source, target in train + evals:
        a, b = source.split("+")
        assert int(target) == int(a) + int(b)
        assert target == str(int(target))


def test_addition_operands_have_lengths_in_range_without_leading_zeros():
    train, _ = make_splits(_cfg("addition", min_length=1, max_length=3, num_train=2000))
    operands = [x for source, _ in train for x in source.split("+")]
    for x in operands:
        assert 1 <= len(x) <= 3
        assert x == "0" or not x.startswith("0")
    assert "0" in operands  # the number 0 is a valid 1-digit operand


@pytest.mark.parametrize("task", sorted(TASKS))
def test_vocab_covers_sources_and_targets(task):
    vocab = task_vocab(task)
    train, evals = make_splits(_cfg(task))
    for source, target in train + evals:
        assert vocab.decode(vocab.encode(source)) == source
        assert vocab.decode(vocab.encode(target)) == target


def test_sample_one_pair():
    source, target = TASKS["reverse"].sample(np.random.default_rng(0), 4, 4)
    assert len(source) == 4
    assert target == source[::-1]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task": "multiply"}, r"Unknown task 'multiply'.*addition.*copy.*reverse.*sort"),
        ({"min_length": 7, "max_length": 6}, "min_length <= max_length"),
        ({"min_length": 0}, "1 <= min_length"),
        ({"num_eval": -1}, "num_eval must be >= 0"),
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


def test_fifty_thousand_reversals_are_fast():
    cfg = TaskConfig(task="reverse", num_train=50_000, num_eval=1000)
    start = time.perf_counter()
    train, _ = make_splits(cfg)
    elapsed = time.perf_counter() - start
    assert len(train) == 50_000
    # ~0.05 s on one core; 2 s leaves room for a busy shared machine.
    assert elapsed < 2.0
