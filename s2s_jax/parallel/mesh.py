"""The device mesh: named axes for data parallelism, FSDP and tensor parallelism."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
AXES = (DATA, FSDP, TENSOR)


class MeshShapeError(ValueError):
    """The configured mesh shape does not fit the available devices."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; ``-1`` (on at most one axis) means "all remaining devices".

    Attributes:
      data: data-parallel replicas (the batch is split across them).
      fsdp: parameter/optimizer-state shards; the batch is split across them too.
      tensor: tensor-parallel shards of heads, MLP and vocabulary dimensions.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> MeshConfig:
        """Reads ``data``, ``fsdp`` and ``tensor`` from the run config's ``parallel`` section."""
        return cls(**{axis: int(section[axis]) for axis in AXES})

    def sizes(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Returns concrete ``(data, fsdp, tensor)`` sizes whose product is ``num_devices``.

        Raises:
          MeshShapeError: if a size is 0 or below -1, several are -1, or the product does not
            equal the device count.
        """
        sizes = self.sizes()
        described = ", ".join(f"{a}={s}" for a, s in zip(AXES, sizes, strict=True))
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise MeshShapeError(
                f"Invalid mesh sizes ({described}): each must be a positive int, and at most one "
                "may be -1 (all remaining devices). Set config.parallel.data/fsdp/tensor."
            )
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise MeshShapeError(
                    f"Mesh sizes ({described}) need a device count divisible by {known}, but "
                    f"there are {num_devices} devices. Change config.parallel.data/fsdp/tensor."
                )
            sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
        if math.prod(sizes) != num_devices:
            raise MeshShapeError(
                f"Mesh sizes ({described}) multiply to {math.prod(sizes)}, but there are "
                f"{num_devices} devices; the product must equal the device count (use -1 on "
                "one axis for 'the rest')."
            )
        return sizes


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: all devices).

    Axes are ``AxisType.Auto``: shardings are given explicitly to ``jax.jit`` (in/out shardings
    and sharding constraints) and the compiler propagates the rest, which is what flax's logical
    partitioning expects.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = config.resolve(len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def single_device_mesh(device: jax.Device | None = None) -> Mesh:
    """A 1x1x1 mesh on one device (default: the first), for running without parallelism."""
    return make_mesh(MeshConfig(1, 1, 1), [device or jax.devices()[0]])
