"""JAX's persistent compilation cache for ``s2s train/evaluate/decode``: on by default.

A second ``s2s decode`` of the same workdir loads its XLA executables from disk instead of
compiling them (tracing and lowering still run: the cache key is the lowered program). Where it
goes, first match wins:

  1. ``--compilation-cache DIR|off`` on the command;
  2. ``S2S_JAX_COMPILATION_CACHE=DIR|off`` (``0`` also means off);
  3. JAX's own setting, left as the user made it (``JAX_COMPILATION_CACHE_DIR``, or
     ``JAX_ENABLE_COMPILATION_CACHE=false`` for none);
  4. ``$XDG_CACHE_HOME/s2s_jax/xla``, else ``~/.cache/s2s_jax/xla``.

Every program is cached, however quickly it compiled: JAX's default skips programs that took
under 1 s, but a decode is a handful of small programs (a tiny model's: 0.03-0.15 s each, plus
~1.4 s for ``generate`` on the 2-core machine) whose sum is most of its start-up compile time.

A cache problem never fails a command: a directory that cannot be created or written is
reported in one warning and the command runs uncached; JAX itself only warns on a bad entry.
``s2s profile`` reports compile time, which a cache hit would replace by a load time, so
``cli.py`` keeps it off there unless ``--compilation-cache DIR`` asks for it.

The cache grows without bound (``JAX_COMPILATION_CACHE_MAX_SIZE=<bytes>`` bounds it; deleting
the directory is always safe). JAX trusts what it loads from the cache: whoever can write the
directory can run code in your process, so never point it at a directory others can write.
Entries are keyed by program, compile options, XLA flags, jaxlib version and device kind; on
CPU, XLA checks the host's features when it loads an entry, and some CPUs fail that check for
entries they wrote themselves (openxla/xla#44565): JAX then warns per program and recompiles,
so turn the cache off there.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV = "S2S_JAX_COMPILATION_CACHE"
OFF = ("off", "0")
_JAX_MIN_COMPILE_SECS = 1.0  # JAX's default for jax_persistent_cache_min_compile_time_secs
_warned: set[Path] = set()
_jax_own: tuple[str | None, bool] | None = None  # JAX's (dir, enabled) before configure ran


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/s2s_jax/xla``, or ``~/.cache/s2s_jax/xla`` when it is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s2s_jax" / "xla"


def configure(setting: str | None = None) -> str | None:
    """Turns JAX's persistent compilation cache on or off, as the module describes.

    Call it before the first compilation; JAX opens the cache at its first compile. Calling it
    again in the same process (tests, notebooks) takes effect too.

    Args:
      setting: the ``--compilation-cache`` flag: a directory, ``"off"``/``"0"``, or None when
        the flag was not given (then ``S2S_JAX_COMPILATION_CACHE``, JAX's own setting or the
        default decide).

    Returns:
      The cache directory in effect, or None when the cache is off.
    """
    if setting is None:
        setting = os.environ.get(ENV, "").strip() or None
    own_dir, own_enabled = _jax_own_setting()
    if setting is None and (own_dir is not None or not own_enabled):
        _set(own_dir, own_enabled)
        return own_dir if own_enabled else None
    if setting is not None and setting.strip().lower() in OFF:
        _disable()
        return None
    path = Path(setting).expanduser().absolute() if setting else default_dir()
    problem = _unwritable(path)
    if problem:
        if path not in _warned:
            _warned.add(path)
            logging.getLogger(__name__).warning(
                "Compilation cache off: cannot write %s (%s).", path, problem
            )
        _disable()
        return None
    _set(str(path), True)
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_MIN_COMPILE_SECS:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(path)


def _jax_own_setting() -> tuple[str | None, bool]:
    """JAX's cache setting as the user left it (env or config), before any call changed it."""
    global _jax_own
    if _jax_own is None:
        config = jax.config
        _jax_own = (config.jax_compilation_cache_dir, config.jax_enable_compilation_cache)
    return _jax_own


def _set(path: str | None, enabled: bool) -> None:
    config = jax.config
    if (config.jax_compilation_cache_dir, config.jax_enable_compilation_cache) == (path, enabled):
        return
    config.update("jax_compilation_cache_dir", path)
    config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()  # JAX opens its cache once; a later setting needs a reopen


def _disable() -> None:
    if jax.config.jax_compilation_cache_dir is not None:
        _set(jax.config.jax_compilation_cache_dir, False)


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot hold the cache (created if missing), or None when it can."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None
