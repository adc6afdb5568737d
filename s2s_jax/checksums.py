"""Content checksums of a pytree of arrays, computed where the arrays live.

A checkpoint records one checksum per array when it is saved and compares them when it is
restored, so flipped, zeroed or overwritten bytes in a data file are caught instead of resuming
on corrupted weights (``checkpointing.Checkpointer``).

Each array's bits (as unsigned integers) are summed twice with odd, position-dependent weights,
modulo 2**32: any single changed bit changes both sums, and a change that cancels in both is a
2**-64 coincidence. The weights are built from per-dimension iotas, elementwise in the array's
own layout, so a sharded array is never gathered: each device sums its shard and one all-reduce
adds them up. One pass over the state: small beside writing it to disk.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}
_MULTIPLIERS = (np.uint32(2654435761), np.uint32(0x85EBCA6B))


def _bits(x: jax.Array) -> jax.Array:
    """The array's bit pattern as uint32 (64-bit values as two uint32 words)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # adds a trailing axis of 2
    return jax.lax.bitcast_convert_type(x, _UNSIGNED[size]).astype(jnp.uint32)


def _position(shape: tuple[int, ...]) -> jax.Array:
    """Row-major element index modulo 2**32, shaped like the array (no reshape)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        index = index + iota * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


@jax.jit
def _digests(leaves: list[jax.Array]) -> jax.Array:
    out = []
    for leaf in leaves:
        bits = _bits(jnp.asarray(leaf))
        position = _position(bits.shape)
        sums = [
            jnp.sum(bits * ((position + np.uint32(k)) * m | np.uint32(1)), dtype=jnp.uint32)
            for k, m in enumerate(_MULTIPLIERS)
        ]
        out.append(jnp.stack(sums))
    return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def tree_checksums(tree: Any) -> dict[str, str]:
    """``{dotted leaf path (Orbax's naming): 16 hex digits}`` for every array leaf of ``tree``."""
    flat = ocp.tree.to_flat_dict(tree, sep=".")
    groups: dict[Any, list[str]] = {}  # one jitted call per device set (a scalar step counter
    for path in sorted(flat):  # may live on one device while the params span the mesh)
        leaf = flat[path]
        devices = frozenset(leaf.devices()) if isinstance(leaf, jax.Array) else None
        groups.setdefault(devices, []).append(path)
    out = {}
    for paths in groups.values():
        digests = _digests([flat[p] for p in paths])
        if not digests.is_fully_addressable and not digests.is_fully_replicated:
            from jax.experimental import multihost_utils

            digests = multihost_utils.process_allgather(digests, tiled=True)
        digests = np.asarray(jax.device_get(digests))
        out.update(
            {p: f"{int(a):08x}{int(b):08x}" for p, (a, b) in zip(paths, digests, strict=True)}
        )
    return dict(sorted(out.items()))


def mismatches(saved: dict[str, str], restored: dict[str, str]) -> list[str]:
    """Leaf paths whose checksum differs, or that only one side has, sorted."""
    return sorted(p for p in saved.keys() | restored.keys() if saved.get(p) != restored.get(p))
