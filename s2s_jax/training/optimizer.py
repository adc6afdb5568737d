"""Optimizers and learning-rate schedules, built from a small frozen config."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    num_steps: int = 2000
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0

    def __post_init__(self):
        for name, table in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, name)
            if value not in table:
                raise ValueError(f"Unknown train.{name} {value!r}; valid: {', '.join(table)}.")

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> OptimizerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


def _after_warmup(cfg: OptimizerConfig, decay: Callable[[int], optax.Schedule]) -> optax.Schedule:
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    rest = decay(max(cfg.num_steps - cfg.warmup_steps, 1))
    return optax.join_schedules([warmup, rest], [cfg.warmup_steps])


def _rsqrt(cfg: OptimizerConfig) -> optax.Schedule:
    # Transformer "noam" decay: linear warmup to the peak, then lr * sqrt(warmup / step).
    warmup = max(cfg.warmup_steps, 1)

    def schedule(step):
        step = jnp.maximum(step, 1)
        return cfg.learning_rate * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))

    return schedule


SCHEDULES: dict[str, Callable[[OptimizerConfig], optax.Schedule]] = {
    "constant": lambda c: _after_warmup(c, lambda n: optax.constant_schedule(c.learning_rate)),
    "cosine": lambda c: _after_warmup(c, lambda n: optax.cosine_decay_schedule(c.learning_rate, n)),
    "linear": lambda c: _after_warmup(c, lambda n: optax.linear_schedule(c.learning_rate, 0.0, n)),
    "rsqrt": _rsqrt,
}

OPTIMIZERS: dict[str, Callable[[OptimizerConfig, optax.Schedule], optax.GradientTransformation]] = {
    "adam": lambda c, lr: optax.adam(lr),
    "adamw": lambda c, lr: optax.adamw(lr, weight_decay=c.weight_decay),
}


def make_optimizer(cfg: OptimizerConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns ``(tx, schedule)``: optional global-norm clipping, then the optimizer."""
    schedule = SCHEDULES[cfg.schedule](cfg)
    parts = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
    parts.append(OPTIMIZERS[cfg.optimizer](cfg, schedule))
    return optax.chain(*parts), schedule
