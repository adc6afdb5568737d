"""The trained workdir an export reads, and the output directory it writes in one rename.

Loading checks what a user can get wrong before anything heavy runs (a missing workdir, config
or checkpoint, a model the target cannot take) and raises ``ExportError`` with one line. Outputs
are written into a temporary directory beside ``OUT`` and renamed into place when complete, so
an export that fails leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.models.seq2seq import Seq2SeqConfig
from s2s_jax.run.components import Components, build, load_workdir_config


class ExportError(ValueError):
    """A problem the user can fix (missing workdir or checkpoint, existing output, bad model)."""


@dataclasses.dataclass
class Trained:
    """A restored run: its components (config, data vocabularies, model), params and step."""

    workdir: Path
    components: Components
    params: Any
    step: int

    @property
    def model_config(self) -> Seq2SeqConfig:
        return self.components.model_config


def _require_checkpoint(workdir: Path) -> None:
    """Fails fast, before the run's data is rebuilt, when nothing was saved."""
    directory = workdir / "checkpoints"
    empty = not directory.is_dir()
    if not empty:
        with Checkpointer(directory, every_steps=1, keep=1, read_only=True) as ckpt:
            empty = ckpt.latest_step() is None
    if empty:
        raise ExportError(
            f"{workdir} has no checkpoint ({directory} holds none): train it first with "
            f"`s2s train --workdir {workdir}`."
        )


def load(workdir: str | Path, check: Callable[[Seq2SeqConfig], None] | None = None) -> Trained:
    """Restores the latest checkpoint of ``workdir``.

    Args:
      workdir: a trained run directory (``config.json`` and ``checkpoints/``).
      check: called with the resolved model config before the params are read; raises
        ValueError when the target cannot take the model.

    Raises:
      ExportError, ConfigError, CheckpointError, ValueError: one-line user errors.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ExportError(f"workdir {workdir} does not exist.")
    config = load_workdir_config(workdir)
    _require_checkpoint(workdir)
    c = build(config, workdir=workdir)
    if check is not None:
        check(c.model_config)
    ckpt = Checkpointer(workdir / "checkpoints", every_steps=1, keep=1, read_only=True)
    with ckpt:  # the newest step that verifies (a damaged one is skipped)
        state, _, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config())
    return Trained(workdir, c, state.params, int(state.step))


def check_output(out: str | Path) -> Path:
    """``out`` as a Path; raises ExportError if it exists (an export never overwrites)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} already exists; choose a new output directory or remove it.")
    return out


@contextlib.contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """Yields an empty temporary directory beside ``out``, renamed to ``out`` on success.

    On an exception the temporary directory is removed and ``out`` never appears.
    """
    out = check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would follow the rename
    try:
        yield tmp
        check_output(out)  # appeared meanwhile: a rename would replace an empty directory
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
