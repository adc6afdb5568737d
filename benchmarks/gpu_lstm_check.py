"""Checks the cuDNN LSTM encoder path against the scanned one and times both (issue #19).

    python benchmarks/gpu_lstm_check.py          # on a GPU: a W1-sized encoder stack
    python benchmarks/gpu_lstm_check.py --tiny   # anywhere: tiny sizes, lstm_ref as the kernel

For a unidirectional and a bidirectional 2-layer LSTM ``RecurrentStack`` (hidden 512, embed 512,
batch 256, length 32, float32, ragged lengths with trailing padding) it runs the same
parameters through ``kernel="scan"`` and ``kernel="cudnn"``, prints the largest differences of
outputs, final states and gradients (matmuls at float32 precision, so TF32 does not blur the
check) and times a forward+backward of each at the default precision (median of ``--steps``
after warm-up), one line per configuration. With ``--tiny`` the kernel is "reference"
(``jax.experimental.rnn.lstm_ref`` on the packed weights), so the script runs on a CPU.
Exits 1 when a difference exceeds ``TOL`` of its array's scale, else 0.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `s2s_jax`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from s2s_jax.models.cudnn_lstm import on_gpu  # noqa: E402
from s2s_jax.models.rnn import RecurrentStack  # noqa: E402

FULL = dict(layers=2, hidden=512, embed=512, batch=256, length=32)
TINY = dict(layers=1, hidden=4, embed=3, batch=3, length=4)
# Largest difference allowed, relative to each array's largest magnitude: float32 maths in a
# different order over 32 steps and 2 layers moves results by ~1e-6 of their scale; a wrong
# gate or a padding leak moves them by O(0.1).
TOL = 1e-4
# --tiny is a smoke test whose timings mean nothing: compile fast on the CPU (as tests/
# fast_compile.py does) rather than well.
FAST_CPU_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def _inputs(sizes: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    batch, length = sizes["batch"], sizes["length"]
    x = jnp.asarray(rng.normal(size=(batch, length, sizes["embed"])), jnp.float32)
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    return x, jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]


def _params(stack: nn.Module, x, mask, *, random: bool):
    """The stack's initial parameters, or (``random``: no initialiser to compile) N(0, 0.5^2)."""
    init = functools.partial(stack.init, jax.random.key(0), x, mask, train=False)
    if not random:
        return nn.meta.unbox(jax.jit(init)())
    rng = np.random.default_rng(0)
    shapes = nn.meta.unbox(jax.eval_shape(init))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


def _loss_and_grads(module: nn.Module, mask, compiler_options: dict | None):
    def loss(params, x):
        outputs, finals = module.apply(params, x, mask, train=False)
        total = jnp.mean(outputs**2) + sum(jnp.mean(leaf**2) for leaf in jax.tree.leaves(finals))
        return total, (outputs, finals)

    grads = jax.grad(loss, argnums=(0, 1), has_aux=True)
    return jax.jit(grads, compiler_options=compiler_options)


def _max_diff(a, b) -> tuple[float, float]:
    """Largest absolute difference over all leaves, and the largest relative to its leaf's scale."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    diffs = [(float(jnp.max(jnp.abs(x - y))), float(jnp.max(jnp.abs(y))) or 1.0) for x, y in pairs]
    return max(d for d, _ in diffs), max(d / s for d, s in diffs)


def _median_seconds(fn, *args, steps: int) -> float:
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check(bidirectional: bool, sizes: dict, kernel: str, steps: int) -> bool:
    """Prints one line for one configuration; returns whether the kernel agrees with the scan."""
    x, mask = _inputs(sizes)
    stacks = {
        name: RecurrentStack("lstm", sizes["hidden"], sizes["layers"], bidirectional, kernel=name)
        for name in ("scan", kernel)
    }
    params = _params(stacks["scan"], x, mask, random=kernel != "cudnn")
    fast = FAST_CPU_COMPILE if kernel != "cudnn" and jax.default_backend() == "cpu" else None
    runs = {name: _loss_and_grads(stack, mask, fast) for name, stack in stacks.items()}
    # On a GPU, float32 matmuls keep TF32 out of the check (a separate compile: the precision is
    # part of jit's cache key); elsewhere the timed compiles serve.
    exact_matmuls = jax.default_matmul_precision("float32") if on_gpu() else nullcontext()
    with exact_matmuls:
        exact = {name: run(params, x) for name, run in runs.items()}
    diff, rel = _max_diff(exact[kernel], exact["scan"])
    seconds = {name: _median_seconds(run, params, x, steps=steps) for name, run in runs.items()}
    tokens = int(mask.sum())
    ok = rel <= TOL
    print(
        f"bidirectional={bidirectional!s:5} kernel={kernel} "
        f"max_abs_diff={diff:.2e} (rel {rel:.2e}, {'ok' if ok else 'FAIL'}) | "
        f"scan {tokens / seconds['scan']:,.0f} tok/s ({seconds['scan'] * 1e3:.2f} ms) | "
        f"{kernel} {tokens / seconds[kernel]:,.0f} tok/s ({seconds[kernel] * 1e3:.2f} ms) | "
        f"speedup {seconds['scan'] / seconds[kernel]:.2f}x",
        flush=True,
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, lstm_ref as the kernel")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    for key in FULL:
        parser.add_argument(f"--{key}", type=int, help=f"override the {key} size")
    args = parser.parse_args(argv)
    if not args.tiny and not on_gpu():
        print(f"No GPU (JAX backend {jax.default_backend()!r}): nothing to check; run on a GPU, "
              "or with --tiny to smoke-test on this machine.")  # fmt: skip
        return 0
    sizes, kernel = (TINY, "reference") if args.tiny else (FULL, "cudnn")
    sizes = {key: getattr(args, key) or value for key, value in sizes.items()}
    steps = min(args.steps, 3) if args.tiny else args.steps
    print(f"backend={jax.default_backend()} devices={jax.devices()} sizes={sizes} steps={steps}")
    results = [check(bidirectional, sizes, kernel, steps) for bidirectional in (False, True)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
