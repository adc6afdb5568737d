"""Tests for s2s_jax.host_memory: XLA:CPU's per-call temporaries stop page-faulting."""

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from s2s_jax import host_memory

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc; a no-op elsewhere"
)

# A jitted call whose 128 MiB of temporaries XLA allocates as one block on every call.
PROGRAM = textwrap.dedent(
    """
    import json, resource, sys
    from s2s_jax import host_memory
    tuned = host_memory.configure() if sys.argv[1] == "before" else None
    import jax, jax.numpy as jnp
    x = jnp.ones((4096, 4096), jnp.float32)
    f = jax.jit(lambda x: jnp.sin(x) @ x[:, :8] + jnp.cos(x) @ x[:, 8:16]).lower(x).compile()
    if sys.argv[1] == "after":
        tuned = host_memory.configure()
    for _ in range(10):  # overlapping calls settle the heap's size first
        f(x).block_until_ready()
    per_call = []
    for _ in range(7):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    # The median call: on a machine with more cores the heap may still grow once more after
    # the warm-up (one call faulting its whole block in), which is not the steady state.
    faults = sorted(per_call)[len(per_call) // 2]
    temp = f.memory_analysis().temp_size_in_bytes
    print(json.dumps({"tuned": tuned, "faults": faults, "temp_pages": temp / 4096}))
    """
)


def _run(when: str, **env: str) -> tuple[dict, str]:
    env = {**os.environ, "XLA_FLAGS": "", **env}
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, when], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_freed_temporaries_are_reused_instead_of_faulted_in_again():
    tuned, _ = _run("before", **{host_memory.ENV: "reuse"})
    system, _ = _run("before", **{host_memory.ENV: "system"})
    assert tuned["temp_pages"] > 30_000
    assert tuned["tuned"] == "reuse" and system["tuned"] == "system"
    # Without the tuning every call faults its whole temporary block in again.
    assert system["faults"] > 0.5 * system["temp_pages"]
    assert tuned["faults"] < 0.02 * tuned["temp_pages"]


def test_tuning_after_jax_started_warns_that_it_is_too_late():
    late, stderr = _run("after", **{host_memory.ENV: "reuse"})
    assert late["tuned"] == "reuse"
    assert "ran after JAX started its backend" in stderr
    assert late["faults"] > 0.5 * late["temp_pages"]  # the warning is true: XLA still faults


@pytest.mark.parametrize(
    "platforms, expected",
    [("cpu", False), ("cuda,cpu", True), ("tpu", True), (" CPU ,cuda", False)],
)
def test_jax_platforms_decides_whether_an_accelerator_is_expected(monkeypatch, platforms, expected):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.accelerator_expected() is expected


def test_an_installed_pjrt_plugin_means_an_accelerator(monkeypatch):
    # A machine with no plugin, whatever this one has installed: no libtpu, no jax_plugins.
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setitem(sys.modules, "jax_plugins", None)  # its import raises ImportError
    entry_points = []
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: entry_points if group == "jax_plugins" else [],
    )
    assert host_memory.accelerator_expected() is False
    entry_points.append(importlib.metadata.EntryPoint("cuda", "jax_cuda12_plugin", "jax_plugins"))
    assert host_memory.accelerator_expected() is True


@pytest.mark.parametrize(
    "env",
    [{}, {host_memory.ENV: "system"}, {host_memory.ENV: "reuse", "JAX_PLATFORMS": "cuda"}],
    ids=["unset", "system", "accelerator"],
)
def test_malloc_is_left_alone_unless_reuse_is_asked_for_on_cpu(monkeypatch, env):
    monkeypatch.setattr(host_memory, "_tuned", False)
    monkeypatch.delenv(host_memory.ENV, raising=False)
    calls = []
    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: calls.append(name))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert host_memory.configure() == "system"
    assert calls == []  # mallopt was never reached


def test_unknown_setting_is_named_with_the_valid_ones(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "jemalloc")
    with pytest.raises(
        ValueError, match="S2S_JAX_HOST_MALLOC='jemalloc' is not one of system, reuse"
    ):
        host_memory.configure()
