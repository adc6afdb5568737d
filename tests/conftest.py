"""Test-session setup: eight simulated CPU devices, so sharding tests run without accelerators.

XLA reads XLA_FLAGS once, when JAX creates its CPU backend, so the flag must be set before any
test module touches a device. A device count the caller already chose is left alone.
"""

import os

NUM_DEVICES = 8
_FLAG = "--xla_force_host_platform_device_count"

if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}={NUM_DEVICES}".strip()

# `s2s` commands run in-process must not write the user's ~/.cache: tests that want the
# persistent compilation cache give it a tmp dir (tests/test_compile_cache.py).
os.environ["S2S_JAX_COMPILATION_CACHE"] = "off"
