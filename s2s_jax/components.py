"""Everything a run builds from its config, shared by `s2s train`, `evaluate` and `decode`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

from s2s_jax.config import ConfigError, base_config, flat_keys, to_dict
from s2s_jax.data.pipeline import Data, build_data
from s2s_jax.generate import DecodeConfig
from s2s_jax.models.registry import build_model, describe
from s2s_jax.training.optimizer import OptimizerConfig, make_optimizer
from s2s_jax.training.state import TrainState, make_init_fn


@dataclasses.dataclass
class Components:
    config: ml_collections.ConfigDict
    data: Data
    model: nn.Module
    model_config: Any  # the family's frozen config
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    decode_config: DecodeConfig

    @property
    def init_fn(self):
        return make_init_fn(self.model, self.tx)

    def rngs(self) -> tuple[jax.Array, jax.Array]:
        """(init_rng, dropout_rng), both derived from the run seed."""
        init_rng, dropout_rng = jax.random.split(jax.random.key(self.config.seed))
        return init_rng, dropout_rng

    def abstract_state(self) -> TrainState:
        return jax.eval_shape(self.init_fn, self.rngs()[0])

    def checkpoint_config(self) -> dict[str, Any]:
        """What a checkpoint stores about its run; "model" is compared on restore."""
        return {"model": describe(self.model_config), "run": to_dict(self.config)}


def build(config: ml_collections.ConfigDict, **decode_overrides) -> Components:
    """Builds data, model, optimizer and decoding settings from a resolved config."""
    data = build_data(
        config.data,
        config.seed,
        eval_batch_size=config.eval.batch_size,
        max_eval=config.eval.max_examples,
    )
    model, model_config = build_model(config.model, data.src_vocab.size, data.tgt_vocab.size)
    tx, schedule = make_optimizer(OptimizerConfig.from_section(config.train))
    decode_config = DecodeConfig.from_section(config.eval, **decode_overrides)
    return Components(config, data, model, model_config, tx, schedule, decode_config)


def load_workdir_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote into ``workdir``."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"No trained run in {workdir}: {path} is missing. Train first with "
            f"`s2s train --config experiments/<name>.py --workdir {workdir}`."
        )
    saved = json.loads(path.read_text())
    config = base_config()
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
