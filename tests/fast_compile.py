"""``fast_jit``: ``jax.jit`` that compiles quickly on CPU, for tests that check values, not speed.

Skipping XLA's backend optimisations and using the older elemental emitters cuts compile time
about 3x on the shared 2-core machine without changing what is computed (the pyproject pins
jaxlib < 0.12, where these DebugOptions exist). On other backends it is plain ``jax.jit``.
"""

import functools

import jax

FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}
fast_jit = functools.partial(
    jax.jit, compiler_options=FAST_COMPILE if jax.default_backend() == "cpu" else None
)
