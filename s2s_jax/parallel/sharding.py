"""Shardings of the train state and of batches, and putting host data onto the mesh.

Parameters carry logical axis names from ``nn.with_logical_partitioning``; the optimizer state
built from those boxed parameters carries the same names (optax maps over the boxes), so one
``nn.get_partition_spec`` over the boxed abstract state gives every leaf its logical spec and
scalars such as Adam's step count come out replicated. `rules.LOGICAL_AXIS_RULES` turns the
logical specs into mesh specs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from s2s_jax.parallel.rules import LOGICAL_AXIS_RULES, LogicalRules


@dataclasses.dataclass(frozen=True)
class TrainShardings:
    """Everything the sharded train step is jitted with.

    Attributes:
      mesh: the device mesh.
      state: a TrainState-shaped pytree of `NamedSharding` (params and optimizer state sharded
        by their logical names, scalars replicated).
      batch: the sharding of every ``[batch, ...]`` array of a training batch.
      replicated: a fully replicated sharding (RNG keys, metrics).
    """

    mesh: Mesh
    state: Any
    batch: NamedSharding
    replicated: NamedSharding

    @property
    def params(self) -> Any:
        return self.state.params


def fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops mesh axes from the dimensions they do not divide evenly.

    jit needs argument dimensions divisible by their mesh axes; a character vocabulary of 14
    cannot be split 8 ways, so that dimension stays whole (replicated) instead of failing.
    Of a tuple of axes the longest dividing prefix is kept.

    Args:
      spec: a mesh PartitionSpec with at most ``len(shape)`` entries.
      shape: the array's shape.
      mesh: the mesh whose axis sizes are checked.
    """
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept, size = [], 1
        for name in names:
            if dim % (size * mesh.shape[name]):
                break
            kept.append(name)
            size *= mesh.shape[name]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def logical_to_shardings(
    logical_specs: Any, abstract: Any, mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES
) -> Any:
    """Maps a pytree of logical PartitionSpecs to `NamedSharding`s fitted to the leaf shapes.

    Args:
      logical_specs: PartitionSpecs of logical names (from ``nn.get_partition_spec``).
      abstract: the matching pytree of arrays or `jax.ShapeDtypeStruct`.
      mesh: the device mesh.
      rules: logical name -> mesh axes.
    """
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    flat_specs = jax.tree.leaves(mesh_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    leaves, treedef = jax.tree.flatten(abstract)
    if len(flat_specs) != len(leaves):
        raise ValueError(
            f"Got {len(flat_specs)} partition specs for {len(leaves)} arrays; the specs must "
            "come from the same (boxed) tree as the arrays."
        )
    shardings = [
        NamedSharding(mesh, fit_spec(spec, leaf.shape, mesh))
        for spec, leaf in zip(flat_specs, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, shardings)


def state_shardings(boxed_abstract_state: Any, mesh: Mesh) -> Any:
    """Shardings for a train state given as the abstract output of a *boxed* init.

    Args:
      boxed_abstract_state: ``jax.eval_shape`` of an init whose params (and hence optimizer
        state) are still ``nn.Partitioned`` boxes, e.g. `training.state.make_boxed_init_fn`.
      mesh: the device mesh.

    Returns:
      The unboxed state's structure with a `NamedSharding` per leaf.
    """
    specs = nn.get_partition_spec(boxed_abstract_state)
    return logical_to_shardings(specs, nn.meta.unbox(boxed_abstract_state), mesh)


def batch_axes_size(mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> int:
    """How many ways the batch dimension is split (product of the mesh axes of "batch")."""
    spec = nn.logical_to_mesh_axes(("batch",), rules)[0]
    names = () if spec is None else (spec,) if isinstance(spec, str) else spec
    return math.prod(mesh.shape[name] for name in names)


def batch_sharding(mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> NamedSharding:
    """Rows of every batch array split over the mesh axes of the logical "batch" axis."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
    """Raises ValueError unless every micro-batch splits evenly over the batch mesh axes."""
    ways = batch_axes_size(mesh)
    if grad_accum_steps < 1 or batch_size % (grad_accum_steps * ways):
        raise ValueError(
            f"data.batch_size={batch_size} must be divisible by parallel.grad_accum_steps="
            f"{grad_accum_steps} times the data*fsdp mesh size {ways} (= "
            f"{grad_accum_steps * ways}), so every micro-batch splits evenly over the devices. "
            "Change data.batch_size, parallel.grad_accum_steps or the mesh shape."
        )


def process_rows(sharding: NamedSharding, batch_size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a global batch held by this process's devices.

    Each process loads only these rows; `shard_batch` assembles the global array from them.

    Raises:
      ValueError: if the process's rows are not one contiguous block (a mesh whose device
        order interleaves processes along the batch axes).
    """
    index_map = sharding.addressable_devices_indices_map((batch_size,))
    bounds = sorted({idx[0].indices(batch_size)[:2] for idx in index_map.values()})
    start, stop = bounds[0][0], bounds[-1][1]
    covered = sum(b - a for a, b in bounds)
    if covered != stop - start:
        raise ValueError(
            f"Process {jax.process_index()} holds non-contiguous batch rows {bounds}; build the "
            "mesh so each process's devices are adjacent along the data/fsdp axes."
        )
    return start, stop


def shard_batch(
    batch: Mapping[str, np.ndarray], sharding: NamedSharding, batch_size: int
) -> dict[str, jax.Array]:
    """Puts this process's rows of a batch onto the mesh as global arrays.

    Args:
      batch: ``{name: [local_rows, ...]}`` host arrays: the whole batch in a single-process
        run, the rows from `process_rows` in a multi-process run.
      sharding: the batch sharding (see `batch_sharding`).
      batch_size: the global number of rows.

    Returns:
      ``{name: [batch_size, ...]}`` jax Arrays sharded by ``sharding``.
    """
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    return {
        name: jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))
        for name, x in batch.items()
    }


def put_global(tree: Any, sharding: NamedSharding) -> Any:
    """Puts host arrays that every process holds in full (e.g. eval batches) onto the mesh."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def eval_batch_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    """Batch-sharded when the eval batch splits evenly over the batch axes, else replicated."""
    return batch_sharding(mesh) if batch_size % batch_axes_size(mesh) == 0 else replicated(mesh)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Makes ``nn.with_logical_constraint`` in models constrain activations on ``mesh``.

    Usable inside a traced function (it sets the abstract mesh, not the concrete one).
    """
    with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        yield


def in_sharding_context(fn: Callable, mesh: Mesh) -> Callable:
    """Wraps ``fn`` so that it is traced inside `sharding_context` (wrap before ``jax.jit``).

    On a one-device mesh every constraint is a no-op, so ``fn`` is returned as it is.
    """
    if mesh.devices.size == 1:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with sharding_context(mesh):
            return fn(*args, **kwargs)

    return wrapped
