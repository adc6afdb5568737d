"""Mesh shapes from config: -1 as "the rest", clear errors, axis names and device layout."""

import jax
import pytest
from jax.sharding import AxisType

from s2s_jax.config import base_config
from s2s_jax.parallel.mesh import AXES, MeshConfig, MeshShapeError, make_mesh, single_device_mesh


@pytest.mark.parametrize(
    "sizes,devices,expected",
    [
        ((-1, 1, 1), 8, (8, 1, 1)),
        ((1, -1, 1), 8, (1, 8, 1)),
        ((2, -1, 2), 8, (2, 2, 2)),
        ((4, 1, 2), 8, (4, 1, 2)),
        ((-1, 1, 1), 1, (1, 1, 1)),
        ((1, 2, -1), 2, (1, 2, 1)),
    ],
)
def test_resolve(sizes, devices, expected):
    assert MeshConfig(*sizes).resolve(devices) == expected


@pytest.mark.parametrize(
    "sizes,devices,message",
    [
        ((2, 2, 1), 8, "multiply to 4, but there are 8 devices"),
        ((3, -1, 1), 8, "divisible by 3, but there are 8 devices"),
        ((-1, -1, 1), 8, "at most one may be -1"),
        ((0, 1, 1), 8, "each must be a positive int"),
        ((-2, 1, 1), 8, "each must be a positive int"),
    ],
)
def test_resolve_errors_name_sizes_and_device_count(sizes, devices, message):
    with pytest.raises(MeshShapeError, match=message):
        MeshConfig(*sizes).resolve(devices)


def test_from_section_reads_parallel_config():
    section = base_config().parallel
    assert MeshConfig.from_section(section) == MeshConfig(-1, 1, 1)


@pytest.mark.parametrize("sizes", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (4, 1, 2)])
def test_make_mesh_uses_all_devices_with_auto_axes(sizes):
    mesh = make_mesh(MeshConfig(*sizes))
    assert mesh.axis_names == AXES
    assert tuple(mesh.shape[a] for a in AXES) == sizes
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
    # Auto axes: shardings come from jit's in/out shardings and constraints, which flax's
    # logical partitioning relies on (Explicit axes would type every intermediate).
    assert mesh.axis_types == (AxisType.Auto,) * 3


def test_make_mesh_on_a_subset_and_single_device():
    devices = jax.devices()[:2]
    mesh = make_mesh(MeshConfig(1, -1, 1), devices)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 1}
    one = single_device_mesh()
    assert one.devices.size == 1 and one.devices.flat[0] == jax.devices()[0]


def test_make_mesh_reports_the_device_count():
    with pytest.raises(MeshShapeError, match=f"there are {jax.device_count()} devices"):
        make_mesh(MeshConfig(3, 3, 1))
