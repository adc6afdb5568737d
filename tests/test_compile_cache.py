"""The persistent compilation cache: where `configure` puts it, and a warm `s2s decode`."""

import logging
import os
import re
import subprocess
import sys

import jax
import pytest

from s2s_jax.run import cli, compile_cache
from s2s_jax.run.cli import main

_JAX_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
)


@pytest.fixture(autouse=True)
def jax_cache_config(monkeypatch):
    """Each test starts from JAX's defaults with no s2s variable set, and leaves JAX as it was."""
    saved = {name: getattr(jax.config, name) for name in _JAX_OPTIONS}
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setattr(compile_cache, "_jax_own", None)
    monkeypatch.setattr(compile_cache, "_warned", set())
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", True)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compile_cache.compilation_cache.reset_cache()


def test_default_dir_is_under_xdg_cache_home_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "s2s_jax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.default_dir() == tmp_path / "home" / ".cache" / "s2s_jax" / "xla"


def test_on_by_default_and_caches_every_program(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = tmp_path / "s2s_jax" / "xla"
    assert compile_cache.configure() == str(expected) and expected.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(expected)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0


@pytest.mark.parametrize("env,flag,expected", [
    ("{tmp}/env", None, "{tmp}/env"),
    ("{tmp}/env", "{tmp}/flag", "{tmp}/flag"),  # the flag wins
    ("off", "{tmp}/flag", "{tmp}/flag"),
    ("{tmp}/env", "off", None),
    ("0", None, None),
    ("OFF", None, None),
])  # fmt: skip
def test_env_and_flag(tmp_path, monkeypatch, env, flag, expected):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "default"))
    monkeypatch.setenv(compile_cache.ENV, env.format(tmp=tmp_path))
    got = compile_cache.configure(flag and flag.format(tmp=tmp_path))
    assert got == (expected and expected.format(tmp=tmp_path))
    enabled, in_jax = jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir
    assert (in_jax if enabled else None) == got
    assert not (tmp_path / "default").exists()


def test_off_disables_a_cache_set_earlier_in_the_process(tmp_path):
    assert compile_cache.configure(str(tmp_path)) == str(tmp_path)
    assert compile_cache.configure("off") is None
    assert not jax.config.jax_enable_compilation_cache


def test_the_users_own_jax_setting_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "default"))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    assert compile_cache.configure() == str(tmp_path / "mine")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert compile_cache.configure(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert compile_cache.configure() == str(tmp_path / "mine")  # theirs again, not the last flag
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)  # JAX_ENABLE_COMPILATION_CACHE=0
    monkeypatch.setattr(compile_cache, "_jax_own", None)
    assert compile_cache.configure() is None and not (tmp_path / "default").exists()


def test_an_unwritable_dir_warns_once_and_runs_uncached(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where a parent directory should be: fails even for root
    with caplog.at_level(logging.WARNING, logger=compile_cache.__name__):
        assert compile_cache.configure(str(blocker / "xla")) is None
        assert compile_cache.configure(str(blocker / "xla")) is None
    assert len(caplog.records) == 1
    assert str(blocker / "xla") in caplog.text and len(caplog.text.strip().splitlines()) == 1
    assert jax.config.jax_compilation_cache_dir is None


def test_profile_leaves_the_cache_off_unless_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    monkeypatch.setitem(cli.COMMANDS, "profile", lambda args, extra: 0)  # no real profile
    assert main(["profile", "--config", "x"]) == 0
    assert not (tmp_path / "env").exists() and "reads low" not in capsys.readouterr().err
    assert main(["profile", "--compilation-cache", str(tmp_path / "flag"), "--config", "x"]) == 0
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "flag")
    assert "compile time reads low" in capsys.readouterr().err


def _decode_one_line(workdir, source, cache_home):
    """`s2s decode` in a fresh process with the default cache under ``cache_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop(compile_cache.ENV, None)
    env.update(XDG_CACHE_HOME=str(cache_home), JAX_EXPLAIN_CACHE_MISSES="1")
    argv = [sys.executable, "-m", "s2s_jax.run.cli", "decode", "--workdir", str(workdir),
            "--input", str(source)]  # fmt: skip
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _misses(run):
    """The programs a run compiled because the cache did not have them."""
    return re.findall(r"PERSISTENT COMPILATION CACHE MISS for '([^']+)'", run.stderr)


def _entries(cache):
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("*-cache")}


def test_a_second_decode_compiles_nothing(tmp_path):
    workdir = tmp_path / "run"
    assert main(["train", "--config", "experiments/reverse_attention.py:tiny",
                 "--workdir", str(workdir), "--config.train.num_steps=2"]) == 0  # fmt: skip
    source = tmp_path / "src.txt"
    source.write_text("12345\n")
    cache = tmp_path / "cache" / "s2s_jax" / "xla"
    first = _decode_one_line(workdir, source, tmp_path / "cache")
    written = _entries(cache)
    assert written and _misses(first)
    second = _decode_one_line(workdir, source, tmp_path / "cache")
    if "Error reading persistent compilation cache entry" in second.stderr:
        pytest.skip("this CPU rejects its own cached XLA:CPU executables (openxla/xla#44565)")
    assert _misses(second) == []
    assert _entries(cache) == written  # nothing new, nothing rewritten
    assert second.stdout == first.stdout and first.stdout.strip()
