"""A damaged newest checkpoint never resumes a run: it is reported in one line, moved aside, and
the run falls back to the newest checkpoint that reads and verifies (``Checkpointer.restore``).

Each case damages step 2 of a directory holding steps 1 and 2 in one of the ways a disk, a
copy or a person can: data files truncated, zeroed, deleted, overwritten or with flipped bytes;
an item folder removed; an empty step folder; garbage in each metadata file.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpointing import CONFIG, CONFIG_JSON, DATA_STATE, assert_trees_equal

from s2s_jax.checkpointing import Checkpointer, CheckpointError


def trained_state(seed: int):
    """Step, a 256 x 256 float32 table (large enough that its values get a data file of their
    own, which Orbax's own checks do not cover) and a small bf16 vector."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "step": jnp.asarray(7 + seed, jnp.int32),
        "params": {
            "table": jax.random.normal(k1, (256, 256)),
            "b": jax.random.normal(k2, (3,), jnp.bfloat16),
        },
    }


ABSTRACT = jax.eval_shape(lambda: trained_state(0))


def _largest_data_file(step_dir):
    """The file holding the big array's values (state/ocdbt.process_0/d/...)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_bytes(path, count=8):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(count):
        data[middle + i] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path):
    path.write_bytes(b"\x00garbage{not json" * 3)


def _empty_folder(step_dir):
    for child in step_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "data file truncated": lambda d: _truncate(_largest_data_file(d)),
    "data file zeroed": lambda d: (f := _largest_data_file(d)).write_bytes(bytes(f.stat().st_size)),
    "data file deleted": lambda d: _largest_data_file(d).unlink(),
    "data file overwritten": lambda d: (f := _largest_data_file(d)).write_bytes(
        os.urandom(f.stat().st_size)
    ),
    "8 bytes flipped in a data file": lambda d: _flip_bytes(_largest_data_file(d)),
    "state folder removed": lambda d: shutil.rmtree(d / "state"),
    "empty step folder": _empty_folder,
    "garbage in state/_METADATA": lambda d: _garbage(d / "state" / "_METADATA"),
    "garbage in config/metadata": lambda d: _garbage(d / "config" / "metadata"),
    "garbage in data_state/metadata": lambda d: _garbage(d / "data_state" / "metadata"),
    "garbage in array_metadatas": lambda d: _garbage(d / "state" / "array_metadatas" / "process_0"),
    "garbage in manifest.ocdbt": lambda d: _garbage(d / "state" / "manifest.ocdbt"),
    "garbage in _CHECKPOINT_METADATA": lambda d: _garbage(d / "_CHECKPOINT_METADATA"),
    "another data state": lambda d: (d / "data_state" / "metadata").write_text('{"epoch": 9}'),
    "another config": lambda d: (d / "config" / "metadata").write_text('{"model": {"x": 1}}'),
    "checksums removed": lambda d: shutil.rmtree(d / "checksums"),
}
# Still restored: a checkpoint written before checksums, and Orbax's own bookkeeping file
# (timestamps; nothing of the state is read from it).
NOT_DAMAGE = {"checksums removed", "garbage in _CHECKPOINT_METADATA"}


def _two_steps(directory):
    with Checkpointer(directory, every_steps=1, keep=5, async_save=False) as ckpt:
        ckpt.save(1, trained_state(seed=1), data_state=DATA_STATE, config=CONFIG)
        ckpt.save(2, trained_state(seed=2), data_state={"epoch": 4}, config=CONFIG)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, kind, caplog):
    directory = tmp_path / "checkpoints"
    _two_steps(directory)
    DAMAGE[kind](directory / "2")
    with Checkpointer(directory, every_steps=1, keep=5) as ckpt:
        state, data_state, config = ckpt.restore(ABSTRACT, config=CONFIG)
        if kind in NOT_DAMAGE:
            assert data_state == {"epoch": 4}
            assert_trees_equal(state, trained_state(seed=2))
            return
        assert_trees_equal(state, trained_state(seed=1))  # step 1's state, bit for bit
        assert data_state == DATA_STATE and config == CONFIG_JSON
        assert ckpt.all_steps() == [1]  # step 2 was moved aside, not deleted
    aside = list((tmp_path / "checkpoints.damaged").iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["2"]
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "/2 is damaged" in warnings[0]


@pytest.mark.parametrize("kind", ["8 bytes flipped in a data file", "garbage in manifest.ocdbt"])
def test_a_reader_falls_back_without_moving_anything(tmp_path, kind):
    directory = tmp_path / "checkpoints"
    _two_steps(directory)
    DAMAGE[kind](directory / "2")
    with Checkpointer(directory, every_steps=1, keep=5, read_only=True) as ckpt:
        assert ckpt.read_config() == CONFIG_JSON
        state, _, _ = ckpt.restore(ABSTRACT, config=CONFIG)
        assert_trees_equal(state, trained_state(seed=1))
        assert ckpt.all_steps() == [1, 2]  # the reader leaves the directory as it is


def test_when_nothing_verifies_the_error_names_every_step(tmp_path):
    directory = tmp_path / "checkpoints"
    _two_steps(directory)
    _flip_bytes(_largest_data_file(directory / "1"))
    shutil.rmtree(directory / "2" / "state")
    with (
        Checkpointer(directory, every_steps=1, keep=5, read_only=True) as ckpt,
        pytest.raises(CheckpointError, match=r"could be read: step 2: .*; step 1: ") as info,
    ):
        ckpt.restore(ABSTRACT, config=CONFIG)
    assert "\n" not in str(info.value)


def test_an_explicit_step_never_falls_back(tmp_path):
    directory = tmp_path / "checkpoints"
    _two_steps(directory)
    _flip_bytes(_largest_data_file(directory / "2"))
    with (
        Checkpointer(directory, every_steps=1, keep=5, read_only=True) as ckpt,
        pytest.raises(CheckpointError, match=r"checkpoints/2 is damaged: "),
    ):
        ckpt.restore(ABSTRACT, config=CONFIG, step=2)


def test_flipped_bytes_are_caught_by_the_checksum_not_by_luck(tmp_path):
    # Without checksums, the flipped bytes restore silently as other numbers.
    directory = tmp_path / "checkpoints"
    _two_steps(directory)
    shutil.rmtree(directory / "2" / "checksums")
    _flip_bytes(_largest_data_file(directory / "2"))
    with Checkpointer(directory, every_steps=1, keep=5, read_only=True) as ckpt:
        state, _, _ = ckpt.restore(ABSTRACT, config=CONFIG)
    assert int(state["step"]) == 9  # step 2 was restored, not step 1
    table = np.asarray(state["params"]["table"])
    assert not np.array_equal(table, np.asarray(trained_state(2)["params"]["table"]))
