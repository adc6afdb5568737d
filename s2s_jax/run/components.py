"""Everything a run builds from its config, shared by `s2s train`, `evaluate` and `decode`."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax
from jax.sharding import Mesh

from s2s_jax.config import MODEL_PARTS, ConfigError, base_config, flat_keys, model_part, to_dict
from s2s_jax.data.config import DataConfig
from s2s_jax.data.pipeline import build_data
from s2s_jax.data.types import Data
from s2s_jax.decoding.generate import DecodeConfig
from s2s_jax.evaluation.metrics import check_metric_names
from s2s_jax.models.registry import build_model, describe
from s2s_jax.parallel import sharding
from s2s_jax.training.optimizer import OptimizerConfig, make_optimizer
from s2s_jax.training.state import TrainState, make_boxed_init_fn, make_init_fn


@dataclasses.dataclass
class Components:
    config: ml_collections.ConfigDict
    data: Data
    model: nn.Module
    model_config: Any  # the resolved encoder-decoder pair (models.seq2seq.Seq2SeqConfig)
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    decode_config: DecodeConfig
    mesh: Mesh | None = None  # None: everything on the first device

    @property
    def init_fn(self):
        return make_init_fn(self.model, self.tx)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics evaluation reports: ``eval.metrics``, or the data's defaults if empty."""
        return tuple(self.config.eval.metrics) or tuple(self.data.default_metrics)

    def rngs(self) -> tuple[jax.Array, jax.Array]:
        """(init_rng, dropout_rng), both derived from the run seed."""
        init_rng, dropout_rng = jax.random.split(jax.random.key(self.config.seed))
        return init_rng, dropout_rng

    @functools.cached_property
    def shardings(self) -> sharding.TrainShardings:
        """Shardings of the train state and batches on ``mesh`` (requires a mesh)."""
        if self.mesh is None:
            raise ValueError("Components.shardings needs a mesh; pass mesh= to build().")
        boxed = jax.eval_shape(make_boxed_init_fn(self.model, self.tx), self.rngs()[0])
        return sharding.TrainShardings(
            mesh=self.mesh,
            state=sharding.state_shardings(boxed, self.mesh),
            batch=sharding.batch_sharding(self.mesh),
            replicated=sharding.replicated(self.mesh),
        )

    def abstract_state(self) -> TrainState:
        """The state's shapes and dtypes, each leaf carrying the sharding it is restored with."""
        shapes = jax.eval_shape(self.init_fn, self.rngs()[0])
        if self.mesh is None:
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            return jax.tree.map(lambda x: x.update(sharding=one), shapes)
        return jax.tree.map(lambda x, s: x.update(sharding=s), shapes, self.shardings.state)

    def init_state(self) -> TrainState:
        """A fresh state, created directly in its sharded layout (no host round trip)."""
        if self.mesh is None:
            return jax.jit(self.init_fn)(self.rngs()[0])
        # out_shardings place every leaf, so init runs outside the logical-axis rules (whose
        # constraints would only repeat them).
        return jax.jit(self.init_fn, out_shardings=self.shardings.state)(self.rngs()[0])

    def checkpoint_config(self) -> dict[str, Any]:
        """What a checkpoint stores about its run; "model" is compared on restore."""
        return {"model": describe(self.model_config), "run": to_dict(self.config)}


def build(
    config: ml_collections.ConfigDict,
    *,
    mesh: Mesh | None = None,
    workdir: str | Path | None = None,
    eval_split: str | None = None,
    **decode_overrides,
) -> Components:
    """Builds data, model, optimizer and decoding settings from a resolved config.

    Args:
      config: the resolved run config.
      mesh: the device mesh to train on; its batch sharding decides which rows of every
        training batch this process loads. None: single device, whole batches.
      workdir: the run directory (TFDS sources keep their SentencePiece models there).
      eval_split: TFDS sources: evaluate on this split instead of ``data.eval_split``.
      **decode_overrides: DecodeConfig fields that replace the config's eval settings.

    Raises:
      ValueError: if the batch size does not split over the mesh and grad accumulation.
      ConfigError: if ``eval.metrics`` names an unknown metric (before any data is loaded).
    """
    check_metric_names(config.eval.metrics)
    rows = None
    if mesh is not None:
        batch_size = config.data.batch_size
        sharding.check_batch_size(batch_size, mesh, config.parallel.grad_accum_steps)
        rows = sharding.process_rows(sharding.batch_sharding(mesh), batch_size)
    try:
        data_config = DataConfig.from_section(config.data)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    data = build_data(
        data_config,
        config.seed,
        eval_batch_size=config.eval.batch_size,
        max_eval=config.eval.max_examples,
        process_rows=rows,
        workdir=None if workdir is None else str(workdir),
        eval_split=eval_split,
    )
    src_size = 0 if data.src_vocab is None else data.src_vocab.size
    try:
        model, model_config = build_model(
            config.model, src_size, data.tgt_vocab.size, data.input_features
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    tx, schedule = make_optimizer(OptimizerConfig.from_section(config.train))
    decode_config = DecodeConfig.from_section(config.eval, **decode_overrides)
    return Components(config, data, model, model_config, tx, schedule, decode_config, mesh)


def load_workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote into ``workdir``."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"No trained run in {workdir}: {path} is missing. Train first with "
            f"`s2s train --config experiments/<name>.py --workdir {workdir}`."
        )
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as a run config: {e}.") from e
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{path} is not a run config (a JSON object); it holds {type(saved).__name__}."
        )
    model = saved.get("model", {})
    if not isinstance(model.get("encoder"), dict) or "type" not in model["encoder"]:
        raise ConfigError(
            f"{path} was written before encoders and decoders became separate parts "
            "(model.family); this version cannot load that run: train it again."
        )
    config = base_config()
    config.unlock()
    for side in MODEL_PARTS:
        config.model[side] = model_part(side, model.get(side, {}).get("type", "rnn"))
    unknown = sorted(set(_flatten(saved)) - set(flat_keys(config)))
    if unknown:
        raise ConfigError(f"{path} has keys this version does not know: {', '.join(unknown)}.")
    config.unlock()
    config.update(saved)
    for key in flat_keys(config):  # JSON turns tuples into lists
        *parents, leaf = key.split(".")
        section = config
        for p in parents:
            section = section[p]
        if isinstance(section[leaf], list):
            section[leaf] = tuple(section[leaf])
    config.lock()
    return config


def _flatten(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.extend(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out
