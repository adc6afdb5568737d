"""The s2s_jax systems: jitted train steps (W1, W2, W4) and fixed-length decoding (W3).

Each is compiled ahead of time (the compile time is reported on its own, never inside a step
time) and returned as a ``harness.System`` whose call waits for its results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from benchmarks.harness import System
from s2s_jax.config import ConfigError, set_parts
from s2s_jax.decoding.generate import DecodeConfig, jit_generate
from s2s_jax.models.registry import build_model
from s2s_jax.profiling import compile_step, count_flops, memory_stats
from s2s_jax.training.optimizer import OptimizerConfig, make_optimizer
from s2s_jax.training.state import init_variables, make_init_fn, param_count
from s2s_jax.training.step import jit_train_step


def with_model(
    config: ml_collections.ConfigDict,
    *,
    encoder: Mapping[str, Any] | None = None,
    decoder: Mapping[str, Any] | None = None,
    **both: Any,
) -> ml_collections.ConfigDict:
    """A copy of the run config with keys of ``model.encoder`` / ``model.decoder`` replaced.

    Args:
      config: the run config (left unchanged).
      encoder, decoder: keys of that part only, e.g. ``encoder={"num_layers": 12}``.
      **both: keys set in both parts (``config.set_parts``), e.g. ``num_layers=12``,
        ``scan_layers=False`` (Transformer) or ``unroll=8`` (recurrent).

    Raises:
      ConfigError: a part of the config has no such key (its type does not take it).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    set_parts(config.model, **both)
    for side, values in (("encoder", encoder), ("decoder", decoder)):
        section = config.model[side]
        for key, value in (values or {}).items():
            if key not in section or key == "type":
                raise ConfigError(
                    f"model.{side} of type {section.type!r} has no key {key!r}; its keys: "
                    f"{', '.join(k for k in section if k != 'type')}."
                )
            section[key] = value
    return config


def count_params(config: ml_collections.ConfigDict, vocab: int) -> int:
    """Parameters of the experiment's model with both vocabularies of size ``vocab``."""
    model, _ = build_model(config.model, vocab, vocab)
    tx, _ = make_optimizer(OptimizerConfig.from_section(config.train))
    state = jax.eval_shape(make_init_fn(model, tx), jax.random.key(0))
    return param_count(state.params)


def train_system(
    workload: str,
    name: str,
    config: ml_collections.ConfigDict,
    vocab: int,
    batches: list[dict[str, np.ndarray]],
    note: str = "",
    rng_impl: str | None = None,
) -> System:
    """The experiment's jitted train step on fixed synthetic batches.

    Args:
      workload: workload label of the rows.
      name: system name of the rows.
      config: the run config (model, optimizer; ``seed``).
      vocab: source = target vocabulary size.
      batches: host batches ``{inputs, inputs_mask: [batch, src_len], targets: [batch,
        tgt_len]}``, cycled.
      note: remark printed with the rows.
      rng_impl: the dropout key's PRNG implementation (``jax.random.key``'s ``impl``, e.g.
        "rbg"); None is JAX's default (threefry).

    Returns:
      A System whose call is one update (state donated and carried between calls), with the
      compile time, counted FLOPs per step (scans counted in full) and XLA's memory figure.
    """
    model, _ = build_model(config.model, vocab, vocab)
    tx, schedule = make_optimizer(OptimizerConfig.from_section(config.train))
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    if rng_impl is not None:
        dropout_rng = jax.random.key(config.seed + 1, impl=rng_impl)
    state = jax.jit(make_init_fn(model, tx))(init_rng)
    step = jit_train_step(model, tx, schedule, config.train.label_smoothing)
    on_device = [jax.device_put(b) for b in batches]
    compiled, compile_seconds = compile_step(step, state, on_device[0], dropout_rng)
    flops = count_flops(step, state, on_device[0], dropout_rng)
    carry = {"state": state, "calls": 0}

    def run_once() -> None:
        batch = on_device[carry["calls"] % len(on_device)]
        carry["state"], metrics = compiled(carry["state"], batch, dropout_rng)
        carry["calls"] += 1
        jax.block_until_ready((carry["state"], metrics))

    return System(
        workload=workload,
        name=name,
        run_once=run_once,
        work_per_call=float(np.count_nonzero(batches[0]["targets"])),
        compile_seconds=compile_seconds,
        flops_per_call=flops,
        memory_bytes=memory_stats(compiled).get("total_bytes"),
        note=note,
    )


def fixed_length_generate(model: nn.Module, *, beam_size: int, length: int, alpha: float):
    """``jit_generate`` for ``(params, inputs, inputs_mask)`` (both ``[batch, src_len]``) taking
    exactly ``length`` steps.

    EOS is blocked for the first ``length - 1`` tokens (``min_length``) and forced at the last
    one (the length cap), so every row takes ``length`` decoder steps whatever the weights (the
    W3 workload: the same work for every system). ``beam_size`` 1 is greedy decoding; larger
    sizes beam search with the GNMT length penalty ``alpha``. Sequences are
    ``[batch, 1, length]``.
    """
    if length < 2 or beam_size < 1:
        raise ValueError(f"Need length >= 2 and beam_size >= 1, got {length}, {beam_size}.")
    cfg = DecodeConfig(
        method="greedy" if beam_size == 1 else "beam", beam_size=beam_size, alpha=alpha,
        max_length_ratio=0.0, max_length_offset=length, min_length=length - 1,
    )  # fmt: skip
    return jit_generate(model, cfg)


def decode_system(
    workload: str,
    name: str,
    model: nn.Module,
    params: Any,
    inputs: np.ndarray,
    inputs_mask: np.ndarray,
    *,
    beam_size: int,
    length: int,
    alpha: float = 0.6,
) -> System:
    """``fixed_length_generate`` compiled for ``inputs`` and ``inputs_mask`` [batch, src_len],
    as a System.

    The params are put in the model's decoding layout once, ahead of time (as ``generate.decoder``
    does for every caller that decodes many batches with fixed params).
    """
    model, params = model.for_decoding(params)
    generate = fixed_length_generate(model, beam_size=beam_size, length=length, alpha=alpha)
    inputs, inputs_mask = jax.device_put((inputs, inputs_mask))
    params = jax.device_put(params)
    compiled, compile_seconds = compile_step(generate, params, inputs, inputs_mask)

    def run_once() -> None:
        jax.block_until_ready(compiled(params, inputs, inputs_mask))

    return System(
        workload=workload,
        name=name,
        run_once=run_once,
        work_per_call=float(inputs.shape[0] * length),
        compile_seconds=compile_seconds,
        memory_bytes=memory_stats(compiled).get("total_bytes"),
        note=f"beam {beam_size}, GNMT alpha {alpha}" if beam_size > 1 else "greedy",
    )


def random_transformer(config: ml_collections.ConfigDict, vocab: int, seed: int = 0):
    """``(model, params)``: the experiment's Transformer randomly initialised (W3 fallback)."""
    model, _ = build_model(config.model, vocab, vocab)
    variables = jax.jit(lambda rng: init_variables(model, rng))(jax.random.key(seed))
    return model, nn.meta.unbox(variables)["params"]
