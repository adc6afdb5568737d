"""Opt-in host malloc tuning on Linux (glibc), so XLA:CPU's per-call buffers stop page-faulting.

XLA:CPU allocates each call's temporaries as one block (a W1 train step: 519 MiB) from the
threads of its CPU client. glibc's malloc serves a block that large with a fresh ``mmap`` and
unmaps it when it is freed, so every call touches all of its pages anew: ~133,000 page faults
per W1 step, each one zeroing a page. With one malloc arena, no ``mmap`` and no trimming, a
freed block stays in the heap and the next call reuses it (after a few calls, while
overlapping calls settle the heap's size).

Measured on the 2-core machine, it is a trade, so it is off unless ``S2S_JAX_HOST_MALLOC=reuse``:
  * train steps 6-12% faster (W1 1,255 -> 1,180 ms in one A/B, 1,134 -> 1,020 ms in another;
    W2 832 -> 716 ms); PyTorch in the same process gains as much or more;
  * peak RSS up by about one call's temporaries: consecutive calls overlap briefly, so the heap
    settles at about two blocks, and it is never handed back (W1: 1,320 -> 1,789 MiB);
  * compiling is slower: every thread shares one arena's lock, and XLA compiles with several
    (a compile-bound slice of the test suite: 269 -> 367 s).
So it suits long CPU training runs, not short or compile-heavy work. Nothing is changed when JAX
will run on an accelerator (a PJRT plugin or libtpu is installed, or ``JAX_PLATFORMS`` names one
first): host memory is not where its buffers live.

A thread picks its malloc arena at its first allocation, so this must run before JAX starts its
CPU backend (the first array, jit call or device query): ``s2s`` and the benchmarks call
`configure` first thing; a script calls it right after its imports.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import logging
import os
import pkgutil
import platform
import sys

ENV = "S2S_JAX_HOST_MALLOC"  # "reuse" opts in; unset or "system": malloc as it is
MODES = ("system", "reuse")
# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_tuned = False


def configure() -> str:
    """Applies the ``S2S_JAX_HOST_MALLOC`` setting; returns the mode in effect.

    Returns:
      "reuse" when malloc was tuned (`reuse_freed_memory`), else "system": the setting is unset
      or "system", JAX will use an accelerator, or the C library is not glibc.

    Raises:
      ValueError: the setting is neither "system" nor "reuse".
    """
    mode = os.environ.get(ENV, "system").strip().lower() or "system"
    if mode not in MODES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r} is not one of {', '.join(MODES)}.")
    if mode == "reuse" and not accelerator_expected() and reuse_freed_memory():
        return "reuse"
    return "system"


def reuse_freed_memory() -> bool:
    """Tunes glibc's malloc as the module describes (whatever ``S2S_JAX_HOST_MALLOC`` says).

    Returns:
      Whether malloc was tuned: False off glibc (macOS, musl).
    """
    global _tuned
    if _tuned:  # an earlier call did it (in time or not, it said so then)
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
    if mallopt is None or not all(mallopt(param, value) == 1 for param, value in _SETTINGS):
        return False
    if _jax_backend_started():
        logging.getLogger(__name__).warning(
            "reuse_freed_memory() ran after JAX started its backend: XLA's threads keep their "
            "own malloc arenas, so their buffers still page-fault. Call it before the first "
            "JAX computation."
        )
    _tuned = True
    return True


def accelerator_expected() -> bool:
    """Whether JAX will pick an accelerator: the first of ``JAX_PLATFORMS`` when it is set, else
    any installed PJRT plugin (the ``jax_plugins`` packages and entry points) or libtpu."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() != "cpu"
    if importlib.util.find_spec("libtpu") is not None:
        return True
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    try:
        import jax_plugins  # namespace package of PJRT plugins, when any is installed
    except ImportError:
        return False
    return any(pkgutil.iter_modules(jax_plugins.__path__))


def _jax_backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public query; a missing one only skips the warning

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())
