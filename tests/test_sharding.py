"""Logical-axis rules, state and batch shardings, and putting host data on the mesh."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from s2s_jax.config import apply_overrides, load_experiment
from s2s_jax.parallel import sharding
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES
from s2s_jax.run.components import build


def mesh_of(*sizes):
    return make_mesh(MeshConfig(*sizes))


def tiny(path="experiments/reverse_attention.py", **overrides):
    return apply_overrides(load_experiment(path, "tiny"), list(overrides.items()))


def test_rules_table_is_small_and_maps_names_as_documented():
    names = [name for name, _ in LOGICAL_AXIS_RULES]
    assert len(names) == len(set(names)) <= 10
    to_mesh = lambda *axes: nn.logical_to_mesh_axes(axes, LOGICAL_AXIS_RULES)
    assert to_mesh("batch", "length", "embed") == P(BATCH_AXES, None, None)
    assert to_mesh("embed", "mlp") == P("fsdp", "tensor")
    assert to_mesh("layers", "embed", "heads", "kv") == P(None, "fsdp", "tensor", None)
    assert to_mesh("vocab", "embed") == P("tensor", "fsdp")
    assert to_mesh("hidden", "mlp") == P(None, "tensor")  # "mlp" wins the tensor axis


@pytest.mark.parametrize(
    "spec,shape,expected",
    [
        (P("fsdp", "tensor"), (16, 128), P("fsdp", "tensor")),
        (P("tensor", "fsdp"), (7, 16), P(None, "fsdp")),  # a vocab of 7 cannot split 2 ways
        (P(("data", "fsdp")), (6, 3), P("data", None)),  # 6 splits over data (2) only
        (P(("data", "fsdp")), (5,), P(None)),
        (P(), (4, 4), P(None, None)),
    ],
)
def test_fit_spec_drops_axes_that_do_not_divide(spec, shape, expected):
    assert sharding.fit_spec(spec, shape, mesh_of(2, 2, 2)) == expected


def test_state_shardings_mirror_params_in_optimizer_state():
    c = build(tiny(), mesh=mesh_of(2, 2, 2))
    state = c.shardings.state
    kernel = state.params["encoder"]["stack"]["layer_0"]["input_proj"]["kernel"]  # ("embed", "mlp")
    assert kernel.spec == P("fsdp", "tensor")
    assert state.params["encoder"]["embedding"]["embedding"].spec == P(
        "tensor", "fsdp"
    )  # vocab, embed
    adam = state.opt_state[1][0]  # chain(clip, adam): ScaleByAdamState
    assert jax.tree.map(lambda s: s.spec, adam.mu) == jax.tree.map(lambda s: s.spec, state.params)
    assert jax.tree.map(lambda s: s.spec, adam.nu) == jax.tree.map(lambda s: s.spec, state.params)
    assert adam.count.spec == P() and state.step.spec == P()


def test_undividable_dims_stay_whole():
    c = build(tiny(), mesh=mesh_of(1, 1, 8))
    # 14 words cannot split 8 ways; "embed" keeps its (size 1) fsdp axis.
    assert c.shardings.params["encoder"]["embedding"]["embedding"].spec == P(None, "fsdp")


def test_init_state_is_laid_out_and_equals_single_device_init():
    c = build(tiny(), mesh=mesh_of(1, 8, 1))
    sharded = c.init_state()
    single = build(tiny()).init_state()
    kernel = sharded.params["encoder"]["stack"]["layer_0"]["input_proj"]["kernel"]
    assert kernel.shape == (16, 128) and kernel.addressable_shards[0].data.shape == (2, 128)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same RNG, same values
    abstract = c.abstract_state()
    assert jax.tree.map(lambda x: x.sharding, abstract) == c.shardings.state


def test_batch_sharding_splits_rows_over_data_and_fsdp():
    mesh = mesh_of(2, 2, 2)
    assert sharding.batch_axes_size(mesh) == 4
    rows = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    out = sharding.shard_batch({"inputs": rows}, sharding.batch_sharding(mesh), 8)["inputs"]
    np.testing.assert_array_equal(np.asarray(out), rows)
    assert {s.data.shape for s in out.addressable_shards} == {(2, 3)}
    assert sharding.process_rows(sharding.batch_sharding(mesh), 8) == (0, 8)  # one process


@pytest.mark.parametrize("batch_size,accum,ok", [(16, 1, True), (16, 2, True), (12, 1, True),
                                                 (12, 2, False), (10, 1, False)])  # fmt: skip
def test_check_batch_size(batch_size, accum, ok):
    mesh = mesh_of(2, 2, 2)  # 4-way batch split
    if ok:
        sharding.check_batch_size(batch_size, mesh, accum)
    else:
        with pytest.raises(ValueError, match=f"batch_size={batch_size} must be divisible"):
            sharding.check_batch_size(batch_size, mesh, accum)


def test_build_rejects_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="grad_accum_steps=4"):
        build(tiny(**{"parallel.grad_accum_steps": "4"}), mesh=mesh_of(8, 1, 1))


def test_eval_batches_fall_back_to_replicated():
    mesh = mesh_of(8, 1, 1)
    assert sharding.eval_batch_sharding(mesh, 32).spec == P(BATCH_AXES)
    assert sharding.eval_batch_sharding(mesh, 30).spec == P()
    x = np.arange(30)
    placed = sharding.put_global({"x": x}, sharding.eval_batch_sharding(mesh, 30))["x"]
    np.testing.assert_array_equal(np.asarray(placed), x)
    assert placed.sharding.is_fully_replicated


def test_sharding_context_turns_logical_constraints_into_mesh_constraints():
    mesh = mesh_of(2, 2, 2)

    def f(x):
        return nn.with_logical_constraint(x * 2, ("batch", "mlp"))

    outside = jax.jit(f).lower(jnp.ones((8, 4))).as_text()
    inside = jax.jit(sharding.in_sharding_context(f, mesh)).lower(jnp.ones((8, 4))).as_text()
    assert "sharding_constraint" not in outside  # no rules: flax leaves x alone
    assert 'sharding_constraint %1 <@mesh, [{"data", "fsdp"}, {"tensor"}]>' in inside
