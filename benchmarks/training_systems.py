"""The systems of the training workloads W1 and W2, by name, each importing only what it needs.

``compare.py`` builds every system of a workload in one process and alternates them;
``peak_rss.py`` builds a single one in a child process of its own. So the builders import their
framework when called, never at module level: an s2s_jax builder loads JAX (not torch), the
PyTorch W1 peer loads torch and the Hugging Face W2 peer torch and transformers (not JAX).

All systems of a workload train on the same batches (``batches``): the experiment's batch size
and lengths, synthetic ids seeded by the experiment's seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import ml_collections
import numpy as np

from benchmarks import workloads
from benchmarks.harness import System

Batches = list[dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Entry:
    """How to build one system of a training workload.

    Attributes:
      build: ``build(tiny, batches) -> System``; imports its framework when called.
      peer: the key of ``peers.REQUIREMENTS`` whose packages it needs; None for s2s_jax.
    """

    build: Callable[[bool, Batches], System]
    peer: str | None = None


CONFIGS: dict[str, Callable[[bool], ml_collections.ConfigDict]] = {
    "W1": workloads.w1_config,
    "W2": workloads.w2_config,
}


def batches(workload: str, tiny: bool) -> Batches:
    """The synthetic batches every system of ``workload`` trains on (4, cycled)."""
    return workloads.training_batches(CONFIGS[workload](tiny), workloads.sizes(tiny).vocab)


def _s2s_jax(workload: str, name: str, config_fn, note: str = "") -> Callable[..., System]:
    def build(tiny: bool, batches: Batches) -> System:
        from benchmarks import s2s_side

        vocab = workloads.sizes(tiny).vocab
        return s2s_side.train_system(workload, name, config_fn(tiny), vocab, batches, note=note)

    return build


def _torch_w1(tiny: bool, batches: Batches) -> System:
    from benchmarks.peers import torch_lstm

    config = workloads.w1_config(tiny)
    return torch_lstm.train_system("W1", config, workloads.sizes(tiny).vocab, batches, config.seed)


def _hf_marian_w2(tiny: bool, batches: Batches) -> System:
    from benchmarks.peers import hf_marian

    return hf_marian.train_system(
        "W2", workloads.w2_config(tiny), workloads.sizes(tiny).vocab, batches
    )


# s2s_jax's system comes first in each workload: the peers are credited with its FLOP count.
SYSTEMS: dict[str, dict[str, Entry]] = {
    "W1": {
        "s2s_jax": Entry(_s2s_jax("W1", "s2s_jax", workloads.w1_config)),
        "torch": Entry(_torch_w1, peer="torch"),
    },
    "W2": {
        "s2s_jax": Entry(_s2s_jax("W2", "s2s_jax", workloads.w2_config, note="post-LN")),
        "s2s_jax pre-LN": Entry(
            _s2s_jax(
                "W2",
                "s2s_jax pre-LN",
                functools.partial(workloads.w2_config, pre_ln=True),
                note="pre-LN variant (Marian is post-LN only)",
            )
        ),
        "hf_marian": Entry(_hf_marian_w2, peer="hf_marian"),
    },
}


def lookup(workload: str, system: str) -> Entry:
    """The entry of ``system`` in ``workload``; ValueError naming the valid choices otherwise."""
    if workload not in SYSTEMS:
        raise ValueError(
            f"Unknown training workload {workload!r}; choose from {', '.join(SYSTEMS)}."
        )
    if system not in SYSTEMS[workload]:
        choices = ", ".join(SYSTEMS[workload])
        raise ValueError(f"Unknown system {system!r} for {workload}; choose from {choices}.")
    return SYSTEMS[workload][system]
