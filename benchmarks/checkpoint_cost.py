"""Cost of checkpoint checksums on the W2 model: one checksum pass beside a save and a restore.

    python benchmarks/checkpoint_cost.py

Saves are synchronous here (so their time includes the write); both save and restore include
the checksums they compute.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax

from benchmarks import workloads
from s2s_jax import checksums
from s2s_jax.checkpointing import Checkpointer
from s2s_jax.models.registry import build_model
from s2s_jax.training.optimizer import OptimizerConfig, make_optimizer
from s2s_jax.training.state import make_init_fn, param_count


def _median_ms(fn: Callable[[int], object], calls: int) -> float:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> dict[str, float]:
    config = workloads.w2_config(tiny=False)
    model, _ = build_model(config.model, 8000, 8000)
    tx, _ = make_optimizer(OptimizerConfig.from_section(config.train))
    state = jax.jit(make_init_fn(model, tx))(jax.random.key(0))
    checksums.tree_checksums(state)  # compiles
    result = {"params": param_count(state.params)}
    result["checksums_ms"] = _median_ms(lambda _: checksums.tree_checksums(state), 5)
    config_json = {"model": {"benchmark": "w2"}}
    with (
        tempfile.TemporaryDirectory() as directory,
        Checkpointer(directory, every_steps=1, keep=2, async_save=False) as ckpt,
    ):
        save = lambda i: ckpt.save(i + 1, state, data_state={}, config=config_json)
        result["save_ms"] = _median_ms(save, 5)
        abstract = jax.eval_shape(lambda: state)
        result["restore_ms"] = _median_ms(lambda _: ckpt.restore(abstract, config=config_json), 3)
    print(
        f"W2 model, {result['params']:,} params + Adam: checksums {result['checksums_ms']:.0f} ms, "
        f"save {result['save_ms']:.0f} ms, restore {result['restore_ms']:.0f} ms (medians)"
    )
    return result


if __name__ == "__main__":
    main()
