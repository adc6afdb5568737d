"""Checkpoints of a training run: atomic, asynchronous, keep-K, resumable and config-checked.

Each checkpoint is one step directory ``<directory>/<step>/`` holding three Orbax items:

    state       the train state pytree (step, params, optimizer state), any pytree of jax arrays;
    data_state  the data iterator position, a small JSON dict (e.g. ``{"epoch": 3, "index": 17}``);
    config      the resolved run config, a JSON dict whose ``"model"`` section describes the model.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it only once every item is
on disk, so a crash mid-save leaves the previous steps intact and the partial one invisible: step
listing skips temporary directories, and a writing `Checkpointer` deletes them when it opens.

With ``async_save=True`` `Checkpointer.save` returns once the arrays are copied to host memory;
the disk write and commit run in a background thread. The caller may therefore donate or delete
the saved arrays as soon as ``save`` returns (the next jitted train step may reuse the buffers).
A new save first waits for the previous one, so at most one save is in flight.

`Checkpointer.restore` compares the model config before reading any array, then checks the saved
tree structure and shapes against the abstract state, so an incompatible run fails with a short
message that names the differing keys instead of a long Orbax trace.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import numbers
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from s2s_jax import checksums
from s2s_jax.config import base_config
from s2s_jax.models import parts

_STATE = "state"
_DATA_STATE = "data_state"
_CONFIG = "config"
_CHECKSUMS = "checksums"  # {"state": {leaf: hex}, "data_state": hex, "config": hex}
_MODEL = "model"
# Enough detail to act on; the full list can run to hundreds of leaves.
_MAX_REPORTED = 5

_FRESH_START = "use the same config, or pass a new --workdir to start a fresh run"

log = logging.getLogger(__name__)


class _Absent:
    """Marks a config key that one side does not have."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or could not be written."""


class CheckpointConfigError(ValueError):
    """A checkpoint does not fit this run (different model config or train-state layout)."""


class _Damaged(Exception):
    """A checkpoint's contents do not match the checksums recorded when it was saved."""


def _json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _describe_damage(error: Exception) -> str:
    """One line for a failed read: the error's type and its first line, without Orbax's trace."""
    if isinstance(error, _Damaged):
        return str(error)
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _missing_item(error: Exception, item: str) -> bool:
    """Whether Orbax failed because a step has no directory for ``item`` at all."""
    return item in str(error) and ("not found" in str(error).lower() or isinstance(error, KeyError))


@contextlib.contextmanager
def _quiet_orbax():
    """Keeps Orbax's (absl) error logging of a failed read out of the terminal."""
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "orbax.checkpoint")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _resolve_directory(directory: str | epath.PathLike) -> epath.Path:
    """Makes a local path absolute; leaves remote URLs (``gs://...``) as they are."""
    text = str(directory)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(text).expanduser().resolve()


def _to_json(value: Any, name: str) -> Any:
    """Returns `value` as it will read back from JSON (tuples become lists).

    Raises:
      ValueError: if `value` is not made of dicts, lists and plain Python scalars.
    """
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name} must be JSON-serializable (dicts, lists, str, int, float, bool, None): {e}. "
            "Convert it first, e.g. config.to_dict() for an ml_collections ConfigDict and "
            "int()/float() for numpy or jax scalars."
        ) from e


def _model_section(config: Any, name: str) -> dict[str, Any]:
    """Returns ``config["model"]``, raising CheckpointConfigError when it is missing."""
    if not isinstance(config, Mapping) or not isinstance(config.get(_MODEL), Mapping):
        raise CheckpointConfigError(
            f"{name} must be a dict with a {_MODEL!r} section holding the resolved model config "
            f"(a flat dict of field -> value); got {type(config).__name__}"
            + (f" with keys {sorted(config)}" if isinstance(config, Mapping) else "")
        )
    return dict(config[_MODEL])


def _flatten(section: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Flattens nested dicts into dotted keys: ``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


# Keys that choose only which kernel computes the same maths on the same parameters: a
# checkpoint moves freely between them (trained on a GPU with cuDNN, evaluated on a CPU).
KERNEL_KEYS = ("attention_kernel", "lstm_kernel")


def config_differences(saved_model: Mapping[str, Any], run_model: Mapping[str, Any]) -> list[str]:
    """Lists how two model config sections differ, one line per key.

    Args:
      saved_model: the ``"model"`` section stored in a checkpoint.
      run_model: the ``"model"`` section of this run (JSON-normalised, so tuples are lists).

    Returns:
      Lines like ``"model.hidden_size: checkpoint has 128, this run has 256"``, sorted by key;
      empty when the sections are equal. A key the checkpoint lacks (it predates that option)
      counts as equal when this run keeps the option's default, so old checkpoints stay usable.
      ``KERNEL_KEYS`` never count.
    """
    saved, run = _flatten(saved_model, _MODEL), _flatten(run_model, _MODEL)
    model_defaults = base_config().model.to_dict()
    for side in ("encoder", "decoder"):  # each part's defaults are its own type's
        part = run_model.get(side)
        if isinstance(part, Mapping) and part.get("type") in parts.CONFIGS[side]:
            model_defaults[side] = parts.part_defaults(side, part["type"])
    defaults = _flatten(_to_json(model_defaults, _MODEL), _MODEL)
    lines = []
    for key in sorted(saved.keys() | run.keys()):
        old, new = saved.get(key, _ABSENT), run.get(key, _ABSENT)
        if key.rsplit(".", 1)[-1] in KERNEL_KEYS:
            continue
        if old is _ABSENT and key in defaults and new == defaults[key]:
            continue
        if old != new:
            lines.append(f"{key}: checkpoint has {old!r}, this run has {new!r}")
    return lines


# The data keys that say what a model was trained on: resuming on other data is refused like
# resuming another model (sizes, lengths and batching may change between runs).
DATA_IDENTITY_KEYS = (
    "task", "source", "tfds_name", "src_lang", "tgt_lang", "vocab_size", "shared_vocab",
    "spm_model_type",
)  # fmt: skip


def data_differences(saved_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> list[str]:
    """Lines like ``"data.task: checkpoint has 'reverse', this run has 'sort'"``.

    Compares ``DATA_IDENTITY_KEYS`` of the ``"run"`` sections (the full run configs); empty when
    either side has none (a checkpoint written by other code, or a bare test config).
    """
    saved = (saved_config.get("run") or {}).get("data")
    run = (run_config.get("run") or {}).get("data")
    if not isinstance(saved, Mapping) or not isinstance(run, Mapping):
        return []
    return [
        f"data.{key}: checkpoint has {saved[key]!r}, this run has {run[key]!r}"
        for key in DATA_IDENTITY_KEYS
        if key in saved and key in run and saved[key] != run[key]
    ]


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Maps each leaf's dotted key path (Orbax's naming) to its shape."""
    flat = ocp.tree.to_flat_dict(tree, sep=".")
    return {path: tuple(getattr(leaf, "shape", np.shape(leaf))) for path, leaf in flat.items()}


def state_differences(saved_tree: Any, abstract_state: Any) -> list[str]:
    """Lists leaves whose presence or shape differs between a saved state and this run's.

    Args:
      saved_tree: the saved state's metadata tree (leaves carry ``.shape``).
      abstract_state: this run's state as a pytree of `jax.ShapeDtypeStruct` (or arrays).

    Returns:
      Lines like ``"params.w: checkpoint has shape (2, 3), this run has (2, 4)"``, sorted by key.
    """
    saved, run = _leaf_shapes(saved_tree), _leaf_shapes(abstract_state)
    lines = []
    for path in sorted(saved.keys() | run.keys()):
        if path not in run:
            lines.append(f"{path}: in the checkpoint but not in this run's state")
        elif path not in saved:
            lines.append(f"{path}: in this run's state but not in the checkpoint")
        elif saved[path] != run[path]:
            lines.append(f"{path}: checkpoint has shape {saved[path]}, this run has {run[path]}")
    return lines


def _summarise(lines: list[str]) -> str:
    shown = "\n".join(f"  {line}" for line in lines[:_MAX_REPORTED])
    more = len(lines) - _MAX_REPORTED
    return shown + (f"\n  ... and {more} more" if more > 0 else "")


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(
            f"step must be a non-negative int, got {step!r}; pass int(state.step) for an array"
        )
    return int(step)


class Checkpointer:
    """Saves and restores a run's train state, data iterator state and config.

    Usage::

        with Checkpointer(workdir / "checkpoints", every_steps=1000, keep=3) as ckpt:
            if ckpt.latest_step() is not None:
                state, data_state, _ = ckpt.restore(abstract_state, config=config)
            for step in ...:
                state, metrics = train_step(state, batch, rng)
                ckpt.save(step, state, data_state=it.get_state(), config=config,
                          force=step == last_step)

    Not thread-safe; in a multi-process run every process makes the same calls.

    Args:
      directory: where step directories live; created if missing. A relative path is resolved
        against the current directory; ``gs://`` style URLs are kept as they are.
      every_steps: `save` writes when ``step % every_steps == 0`` (or when forced).
      keep: how many of the most recent checkpoints to keep; older ones are deleted.
      async_save: write to disk in a background thread while training continues.
      read_only: for readers such as evaluation or decoding jobs, which may run beside the
        training job: never creates the directory, deletes temporary directories or saves, and
        re-reads the step list from disk on every query.
    """

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        every_steps: int,
        keep: int,
        async_save: bool = True,
        read_only: bool = False,
    ) -> None:
        self._every_steps = _check_positive(every_steps, "every_steps")
        self._keep = _check_positive(keep, "keep")
        self._read_only = read_only
        self._closed = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else self._keep,
            save_interval_steps=0 if read_only else 1,
            enable_async_checkpointing=async_save,
            create=not read_only,
            # A writer owns the directory, so leftovers of a crashed save are its own to delete.
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        registry = ocp.handlers.create_default_handler_registry(
            **{
                _STATE: ocp.StandardCheckpointHandler(),
                _DATA_STATE: ocp.JsonCheckpointHandler(),
                _CONFIG: ocp.JsonCheckpointHandler(),
                _CHECKSUMS: ocp.JsonCheckpointHandler(),
            }
        )
        self._manager = ocp.CheckpointManager(
            _resolve_directory(directory), options=options, handler_registry=registry
        )

    @property
    def directory(self) -> epath.Path:
        """The absolute directory holding the step directories."""
        return self._manager.directory

    def all_steps(self) -> list[int]:
        """Returns the committed steps, ascending (in a writer, also a save still in flight)."""
        if self._read_only:
            self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Returns the newest step, or None when the directory holds no checkpoint."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_state: dict[str, Any],
        config: dict[str, Any],
        force: bool = False,
    ) -> bool:
        """Starts saving a checkpoint if `step` is on the save interval or `force` is set.

        Args:
          step: the training step the state belongs to.
          state: pytree of jax arrays (step, params, optimizer state). With async saving the
            arrays are copied to host before this returns, so they may be donated afterwards.
          data_state: JSON dict with the data iterator position.
          config: JSON dict of the resolved run config; must have a ``"model"`` section.
          force: save even off the interval, e.g. at the final step.

        Returns:
          Whether a save started. False off the interval, and when `step` is already saved
          (a resumed run reaching its restored step again has nothing new to write).

        Raises:
          ValueError: for a negative step or data_state/config that are not JSON dicts.
          CheckpointError: on a read-only Checkpointer, or if the previous async save failed.
        """
        step = _check_step(step)
        # Checked on every call so a bad config fails at the first step, not the first save.
        data_state = _to_json(data_state, "data_state")
        config = _to_json(config, "config")
        _model_section(config, "config")
        if not force and step % self._every_steps:
            return False
        if self._read_only:
            raise CheckpointError(f"Checkpointer for {self.directory} is read-only; cannot save.")
        # Surfaces a failed previous save here as a CheckpointError, not a raw Orbax error.
        self.wait()
        if step in self._manager.all_steps():
            log.info("Step %d is already saved in %s; not saving it again.", step, self.directory)
            return False
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(state),
                _DATA_STATE: ocp.args.JsonSave(data_state),
                _CONFIG: ocp.args.JsonSave(config),
                _CHECKSUMS: ocp.args.JsonSave(
                    {
                        _STATE: checksums.tree_checksums(state),
                        _DATA_STATE: _json_digest(data_state),
                        _CONFIG: _json_digest(config),
                    }
                ),
            }
        )
        return bool(self._manager.save(step, args=args, force=True))

    def read_config(self, step: int | None = None) -> dict[str, Any]:
        """Reads only the config saved with a checkpoint (the latest one by default).

        Used to rebuild the model of a finished or running training job from its workdir.

        Raises:
          CheckpointError: if there is no checkpoint, or none at `step`.
        """
        if step is not None:
            return self._only(step, self._read_config)
        return self._newest_good(self._read_config)[1]

    def _only(self, step: int, read: Any) -> Any:
        """``read(step)`` for an explicitly asked step: damage is an error, never a fallback."""
        step = self._resolve_step(step)
        try:
            with _quiet_orbax():
                return read(step)
        except _Damaged as e:
            raise CheckpointError(f"Checkpoint {self._step_path(step)} is damaged: {e}") from e

    def _read_config(self, step: int) -> dict[str, Any]:
        restored = self._restore_items(
            step, **{_CONFIG: ocp.args.JsonRestore(), _CHECKSUMS: ocp.args.JsonRestore()}
        )
        config, sums = restored[_CONFIG], restored[_CHECKSUMS]
        if sums is not None and _json_digest(config) != sums.get(_CONFIG):
            raise _Damaged(f"{_CONFIG}: its checksum does not match")
        return config

    def _newest_good(self, read: Any) -> tuple[int, Any]:
        """``(step, read(step))`` for the newest step that ``read`` gets through undamaged.

        A step that fails to read or verify is reported in one line and skipped; a writer moves
        it aside into ``<directory>.damaged/`` (never deletes it) so training goes on from the
        step before and never saves over it. ``CheckpointConfigError`` (the run does not fit)
        is not damage: it is raised at once, as is any error outside reading and verifying.

        Raises:
          CheckpointError: no checkpoint at all, or none that reads (each one's problem named).
        """
        steps = self._resolve_step(None) and self.all_steps()
        problems = []
        for step in reversed(steps):
            try:
                with _quiet_orbax():
                    return step, read(step)
            except _Damaged as e:
                problem = str(e)
                problems.append(f"step {step}: {problem}")
                where = self._set_aside(step)
                log.warning("Checkpoint %s is damaged (%s); %s", self._step_path(step), problem,
                            where)  # fmt: skip
        raise CheckpointError(
            f"No checkpoint in {self.directory} could be read: {'; '.join(problems)}. "
            "Train again with a new --workdir."
        )

    def _set_aside(self, step: int) -> str:
        """Moves a damaged step out of the step directory (writers only); says where."""
        if self._read_only:
            return "falling back to the one before"
        aside = epath.Path(f"{self.directory}.damaged") / f"{step}-{time.strftime('%Y%m%d%H%M%S')}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        self._step_path(step).rename(aside)
        self._manager.reload()
        return f"moved to {aside}, falling back to the one before"

    def restore(
        self, abstract_state: Any, *, config: dict[str, Any], step: int | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Restores a checkpoint into the layout of `abstract_state`.

        The model config and then the state's tree structure and shapes are compared before any
        array is read, so an incompatible run fails fast with the differing keys named.

        Args:
          abstract_state: this run's train state as `jax.ShapeDtypeStruct` leaves (from
            `jax.eval_shape` on the init function), each optionally carrying ``.sharding``;
            restored arrays get these shardings and dtypes (a different dtype is cast).
          config: this run's resolved config; its ``"model"`` section must equal the saved one.
          step: which step to restore; the latest when None.

        Returns:
          (state, data_state, saved_config): the state with `abstract_state`'s structure, and the
          JSON dicts saved with it.

        Raises:
          CheckpointError: if there is no checkpoint, or none at `step`.
          CheckpointConfigError: if the model config, tree structure or shapes differ.
        """
        run_config = _to_json(config, "config")
        _model_section(run_config, "this run's config")
        read = functools.partial(self._restore_step, abstract_state, run_config)
        if step is not None:
            return self._only(step, read)
        return self._newest_good(read)[1]

    def _restore_step(
        self, abstract_state: Any, config: dict[str, Any], step: int
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """``restore`` of one step, verifying every checksum the step recorded."""
        run_model = _model_section(config, "this run's config")
        path = self._step_path(step)
        saved_config = self._read_config(step)
        saved_model = _model_section(saved_config, f"the config saved in {path}")
        if "family" in saved_model and "encoder" not in saved_model:
            raise CheckpointConfigError(
                f"Checkpoint {path} was written before encoders and decoders became separate "
                f"model parts (model.family={saved_model['family']!r}); this version cannot "
                "restore it: train again with a new --workdir."
            )
        differences = config_differences(saved_model, run_model) + data_differences(
            saved_config, _to_json(config, "config")
        )
        if differences:
            raise CheckpointConfigError(
                f"Checkpoint {path} was written with a different model or data config:\n"
                f"{_summarise(differences)}\nTo resume, {_FRESH_START}."
            )
        self._check_state_layout(step, abstract_state)
        restored = self._restore_items(
            step,
            **{
                _STATE: ocp.args.StandardRestore(abstract_state),
                _DATA_STATE: ocp.args.JsonRestore(),
                _CHECKSUMS: ocp.args.JsonRestore(),
            },
        )
        state, data_state, sums = restored[_STATE], restored[_DATA_STATE], restored[_CHECKSUMS]
        if sums is None:  # written before checksums existed: nothing to verify against
            log.info("Checkpoint %s has no checksums (an older version wrote it).", path)
        else:
            if _json_digest(data_state) != sums.get(_DATA_STATE):
                raise _Damaged(f"{_DATA_STATE}: its checksum does not match")
            bad = checksums.mismatches(sums.get(_STATE, {}), checksums.tree_checksums(state))
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise _Damaged(f"array {_STATE}.{bad[0]}{more}: checksum does not match")
        return state, data_state, saved_config

    def wait(self) -> None:
        """Blocks until an asynchronous save has been committed (and old steps deleted).

        Raises:
          CheckpointError: if the background save failed.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(f"Saving a checkpoint in {self.directory} failed: {e}") from e

    def close(self) -> None:
        """Waits for a pending save, then releases Orbax's background resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _step_path(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def _resolve_step(self, step: int | None) -> int:
        """Returns `step` (latest when None) after checking that it is committed."""
        if not self._read_only:
            # A save of the wanted step may still be in flight; restoring needs it committed.
            self.wait()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(
                f"No checkpoint found in {self.directory}. Check the --workdir, or train first."
            )
        if step is None:
            return steps[-1]
        step = _check_step(step)
        if step not in steps:
            raise CheckpointError(
                f"No checkpoint for step {step} in {self.directory}; saved steps are {steps}."
            )
        return step

    def _restore_items(self, step: int, **items: Any) -> Mapping[str, Any]:
        """Orbax's restore; any failure inside it is damage to the step (``_Damaged``)."""
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            if _CHECKSUMS in items and _missing_item(e, _CHECKSUMS):
                # Written before checksums existed: read the rest, with nothing to verify.
                del items[_CHECKSUMS]
                return {**self._restore_items(step, **items), _CHECKSUMS: None}
            raise _Damaged(_describe_damage(e)) from e

    def _check_state_layout(self, step: int, abstract_state: Any) -> None:
        """Raises CheckpointConfigError if the saved tree structure or shapes differ."""
        try:
            metadata = self._manager.item_metadata(step)[_STATE]
        except Exception as e:
            raise _Damaged(_describe_damage(e)) from e
        differences = state_differences(getattr(metadata, "tree", metadata), abstract_state)
        if differences:
            raise CheckpointConfigError(
                f"Checkpoint {self._step_path(step)} does not fit this run's train state "
                f"although the model config matches (e.g. another optimizer or code version):\n"
                f"{_summarise(differences)}\nTo resume, {_FRESH_START}."
            )
