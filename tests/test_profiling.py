"""Tests for s2s_jax.profiling: FLOPs (XLA and jaxpr), peak FLOP/s, MFU, memory, traces, HLO."""

import gzip
import json
import types

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from s2s_jax.profiling import (
    Peak,
    Tracer,
    compile_step,
    count_flops,
    device_peak_memory,
    dump_hlo,
    measure_matmul_flops,
    memory_stats,
    mfu,
    peak_flops,
    step_flops,
    table_peak,
)

matmul = jax.jit(jnp.matmul)


def _args(*shapes):
    return [jnp.ones(shape, jnp.float32) for shape in shapes]


@pytest.mark.parametrize("m,n,k", [(64, 16, 32), (7, 5, 3), (1, 128, 256)])
def test_step_flops_and_count_flops_of_a_matmul_are_2mnk(m, n, k):
    compiled, seconds = compile_step(matmul, *_args((m, k), (k, n)))
    assert seconds > 0
    # Both count one multiply-add as two FLOPs; a plain dot has no other arithmetic: exact.
    assert step_flops(compiled) == 2 * m * n * k
    assert count_flops(matmul, *_args((m, k), (k, n))) == 2 * m * n * k


def test_compiled_step_computes_what_the_jitted_function_does():
    a, b = jnp.arange(6.0).reshape(2, 3), jnp.arange(12.0).reshape(3, 4)
    compiled, _ = compile_step(matmul, a, b)
    assert jnp.array_equal(compiled(a, b), a @ b)


def _recurrence(h, w, length):
    def body(h, _):
        return jnp.tanh(h @ w), None

    return jax.lax.scan(body, h, None, length=length)[0]


def _unrolled(h, w, length):
    for _ in range(length):
        h = jnp.tanh(h @ w)
    return h


@pytest.mark.parametrize("length", [1, 5, 12])
def test_count_flops_counts_scan_bodies_length_times(length):
    h, w = _args((8, 16), (16, 16))
    per_step = 2 * 8 * 16 * 16  # tanh is transcendental: no FLOPs, as in XLA
    scanned = jax.jit(_recurrence, static_argnums=2)
    assert count_flops(scanned, h, w, length) == length * per_step
    assert count_flops(jax.jit(_unrolled, static_argnums=2), h, w, length) == length * per_step
    # XLA's cost analysis counts the while body once (+2 for the loop counter): why
    # count_flops exists.
    compiled, _ = compile_step(scanned, h, w, length)
    assert step_flops(compiled) < per_step + 10


def test_count_flops_agrees_with_xla_on_a_loop_free_gradient():
    def loss(p, x):
        hidden = jax.nn.relu(x @ p["w1"] + p["b1"])
        return jnp.mean((hidden @ p["w2"]) ** 2)

    params = {"w1": jnp.ones((32, 64)), "b1": jnp.zeros(64), "w2": jnp.ones((64, 8))}
    grad = jax.jit(jax.grad(loss))
    x = jnp.ones((16, 32))
    compiled, _ = compile_step(grad, params, x)
    # Matmuls agree exactly; XLA folds or fuses a few elementwise ops differently (0.3% here).
    assert count_flops(grad, params, x) == pytest.approx(step_flops(compiled), rel=0.01)


@pytest.mark.parametrize("groups", [1, 2])
def test_count_flops_of_a_convolution_matches_xla(groups):
    conv = jax.jit(
        lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "VALID", feature_group_count=groups)
    )
    lhs, rhs = _args((2, 4, 10, 10), (8, 4 // groups, 3, 3))
    compiled, _ = compile_step(conv, lhs, rhs)
    expected = 2 * (2 * 8 * 8 * 8) * (4 // groups) * 9  # 2 * outputs * taps per output
    assert count_flops(conv, lhs, rhs) == step_flops(compiled) == expected


def test_count_flops_takes_the_costlier_cond_branch():
    def fn(x, pred):
        return jax.lax.cond(pred, lambda x: x @ x @ x, lambda x: x @ x, x)

    assert count_flops(fn, jnp.ones((8, 8)), True) == 2 * (2 * 8**3)


def test_count_flops_multiplies_shard_map_bodies_by_the_device_count():
    mesh = AbstractMesh((4,), ("data",))  # tracing only: no devices needed
    fn = jax.shard_map(
        lambda x, w: x @ w, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data")
    )
    x = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    w = jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert count_flops(fn, x, w) == 2 * 64 * 32 * 16  # 4 devices x [16, 32] @ [32, 16]


def test_memory_stats_reports_argument_and_output_bytes():
    compiled, _ = compile_step(matmul, *_args((64, 32), (32, 16)))
    stats = memory_stats(compiled)
    assert stats["argument_bytes"] == (64 * 32 + 32 * 16) * 4
    assert stats["output_bytes"] == 64 * 16 * 4
    assert stats["total_bytes"] == (
        stats["argument_bytes"] + stats["output_bytes"] - stats["alias_bytes"] + stats["temp_bytes"]
    )


def test_memory_stats_sees_donated_buffers_as_aliased():
    step = jax.jit(lambda x: x * 2.0, donate_argnums=0)
    compiled, _ = compile_step(step, jnp.ones((32, 32)))
    assert memory_stats(compiled)["alias_bytes"] == 32 * 32 * 4


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="accelerators report a peak")
def test_device_peak_memory_is_not_reported_on_cpu():
    assert device_peak_memory() is None


@pytest.mark.parametrize("lower_only", [False, True])
def test_dump_hlo_writes_optimized_hlo(tmp_path, lower_only):
    lowered = matmul.lower(*_args((4, 3), (3, 2)))
    path = dump_hlo(lowered if lower_only else lowered.compile(), tmp_path / "hlo" / "step.txt")
    text = path.read_text()
    assert text.startswith("HloModule")
    assert "dot(" in text or "dot." in text


def test_dump_hlo_rejects_other_objects(tmp_path):
    with pytest.raises(ValueError, match="Compiled or Lowered"):
        dump_hlo(matmul, tmp_path / "x.txt")


@pytest.mark.parametrize(
    "kind,dtype,expected",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H100 80GB HBM3", "float32", 494.7e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H200", "bfloat16", 989e12),
        ("NVIDIA A100-SXM4-40GB", "bfloat16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "float32", 156e12),
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v6 lite", "bfloat16", 918e12),
        ("cpu", "float32", None),
        ("TPU v4", "float64", None),
    ],
)
def test_table_peak(kind, dtype, expected):
    assert table_peak(kind, dtype) == expected


def test_peak_flops_uses_the_table_for_a_known_device():
    tpu = types.SimpleNamespace(device_kind="TPU v5 lite", platform="tpu")
    assert peak_flops(tpu, dtype="bfloat16") == Peak(197e12, "table: TPU v5 lite, bfloat16")


def test_peak_flops_config_override_wins():
    tpu = types.SimpleNamespace(device_kind="TPU v4", platform="tpu")
    assert peak_flops(tpu, override=1.5e9) == Peak(1.5e9, "config profile.peak_flops")
    with pytest.raises(ValueError, match="peak_flops must be >= 0"):
        peak_flops(tpu, override=-1.0)


def test_peak_flops_measures_an_unknown_device_and_caches_it():
    peak = peak_flops(jax.devices("cpu")[0], size=128, repeats=3)
    assert peak.flops_per_sec > 0
    assert "measured: float32 128x128x128" in peak.source
    # Cached per process: the same arguments give the very same measurement.
    again = measure_matmul_flops(128, 3, dtype="float32", device=jax.devices("cpu")[0])
    assert again == peak.flops_per_sec


def test_measure_matmul_flops_rejects_bad_sizes():
    with pytest.raises(ValueError, match="size >= 1"):
        measure_matmul_flops(0, 3)


@pytest.mark.parametrize(
    "flops,seconds,peak,devices,expected",
    [(1e9, 0.5, 4e9, 1, 0.5), (1e9, 0.5, 4e9, 2, 0.25), (0.0, 1.0, 1.0, 1, 0.0)],
)
def test_mfu(flops, seconds, peak, devices, expected):
    assert mfu(flops, seconds, peak, devices) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("args", [(1e9, 0.0, 1e9, 1), (1e9, 1.0, 0.0, 1), (1e9, 1.0, 1.0, 0)])
def test_mfu_rejects_bad_inputs(args):
    with pytest.raises(ValueError, match="mfu needs"):
        mfu(*args)


def _traced_step_numbers(tracer: Tracer) -> set[int]:
    (perfetto,) = [p for p in tracer.trace_files() if p.name == "perfetto_trace.json.gz"]
    trace = json.loads(gzip.decompress(perfetto.read_bytes()))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return {int(e["args"]["step_num"]) for e in events if e.get("name") == "train"}


def test_tracer_traces_only_the_chosen_steps(tmp_path):
    x = jnp.ones((16, 16))
    with Tracer(tmp_path, (2, 4), perfetto=True) as tracer:
        for step in range(6):
            tracer.step(step, wait_for=x)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                x = matmul(x, x) / 16.0
    assert tracer.traced_steps == [2, 3]
    assert any(p.name.endswith(".xplane.pb") for p in tracer.trace_files())
    assert all(p.is_relative_to(tmp_path / "profile") for p in tracer.trace_files())
    assert _traced_step_numbers(tracer) == {2, 3}


def test_tracer_close_stops_a_run_that_ends_inside_the_window(tmp_path):
    tracer = Tracer(tmp_path, (1, 100))
    for step in range(3):
        tracer.step(step)
    tracer.close()
    assert tracer.traced_steps == [1, 2]
    assert tracer.trace_files()
    jax.profiler.start_trace(str(tmp_path / "other"))  # the profiler is free again
    jax.profiler.stop_trace()


def test_tracer_without_steps_writes_nothing(tmp_path):
    with Tracer(tmp_path) as tracer:
        for step in range(3):
            tracer.step(step)
    assert tracer.traced_steps == []
    assert not (tmp_path / "profile").exists()


@pytest.mark.parametrize("steps", [(5,), (3, 3), (4, 2), (-1, 2)])
def test_tracer_rejects_bad_windows(tmp_path, steps):
    with pytest.raises(ValueError, match="trace_steps"):
        Tracer(tmp_path, steps)
