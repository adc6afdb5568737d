"""Tests for s2s_jax.models.positions."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.positions import (
    AbsolutePositionEmbedding,
    RelativePositionBias,
    apply_rope,
    relative_position_buckets,
    sinusoidal_table,
)

# float32 sin/cos of angles below ~100 rad are accurate to a few ulps (~1e-6 absolute).
TOL = 1e-5


def test_sinusoidal_table_hand_values():
    # features 4: frequencies 1 and 10000 ** (-2/4) = 0.01; sin half then cos half.
    table = sinusoidal_table(5, 4)
    assert table.shape == (5, 4) and table.dtype == np.float32
    np.testing.assert_allclose(table[0], [0.0, 0.0, 1.0, 1.0], atol=TOL)
    np.testing.assert_allclose(table[1], [0.8414710, 0.0099998, 0.5403023, 0.9999500], atol=TOL)
    np.testing.assert_allclose(table[3], [0.1411200, 0.0299955, -0.9899925, 0.9995500], atol=TOL)


def test_sinusoidal_table_rejects_odd_size():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 5)


def test_rope_rotates_pairs_by_position():
    # head_dim 2 has one pair with frequency 1: position p rotates (1, 0) by p radians.
    x = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    for position in (0, 1, 3):
        out = apply_rope(x, jnp.array([[position]]))
        np.testing.assert_allclose(
            out.reshape(2), [math.cos(position), math.sin(position)], atol=TOL
        )


def test_rope_dot_product_depends_only_on_offset():
    kq, kk = jax.random.split(jax.random.key(0))
    q = jax.random.normal(kq, (1, 1, 1, 8))
    k = jax.random.normal(kk, (1, 1, 1, 8))

    def score(m, n):
        rq = apply_rope(q, jnp.array([[m]]))
        rk = apply_rope(k, jnp.array([[n]]))
        return float(jnp.sum(rq * rk))

    reference = score(3, 1)
    for m, n in [(2, 0), (10, 8), (57, 55)]:
        assert score(m, n) == pytest.approx(reference, abs=1e-4)  # angles up to 57 rad
    assert abs(score(3, 0) - reference) > 1e-2
    # Rotation keeps the norm, and position 0 is the identity.
    np.testing.assert_allclose(apply_rope(q, jnp.array([[0]])), q, atol=TOL)
    rotated = apply_rope(q, jnp.array([[7]]))
    assert float(jnp.linalg.norm(rotated)) == pytest.approx(float(jnp.linalg.norm(q)), rel=1e-5)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head_dim"):
        apply_rope(jnp.ones((1, 1, 1, 3)), jnp.zeros((1, 1), jnp.int32))


@pytest.mark.parametrize(
    "relative, bucket",
    [
        (3, 0),  # future keys share bucket 0 (they are masked)
        (0, 0),
        (-5, 5),
        (-15, 15),  # last exact bucket (max_exact = 16)
        (-16, 16),
        (-20, 17),  # 16 + floor(16 * log(20/16) / log(8)) = 16 + 1
        (-64, 26),  # 16 + floor(16 * log(4) / log(8)) = 16 + 10
        (-127, 31),
        (-1000, 31),  # beyond max_distance: last bucket
    ],
)
def test_causal_buckets(relative, bucket):
    got = relative_position_buckets(
        jnp.array(relative), bidirectional=False, num_buckets=32, max_distance=128
    )
    assert int(got) == bucket


@pytest.mark.parametrize(
    "relative, bucket",
    [
        (0, 0),
        (-3, 3),  # past keys: lower half
        (3, 19),  # future keys: upper half, offset 16
        (-8, 8),  # first log bucket (max_exact = 8)
        (-20, 10),  # 8 + floor(8 * log(20/8) / log(16)) = 8 + 2
        (20, 26),
        (-200, 15),
        (200, 31),
    ],
)
def test_bidirectional_buckets(relative, bucket):
    got = relative_position_buckets(
        jnp.array(relative), bidirectional=True, num_buckets=32, max_distance=128
    )
    assert int(got) == bucket


def test_buckets_monotone_in_distance():
    distances = jnp.arange(0, 300)
    buckets = relative_position_buckets(
        -distances, bidirectional=False, num_buckets=32, max_distance=128
    )
    assert bool(jnp.all(jnp.diff(buckets) >= 0))
    assert int(buckets.min()) == 0 and int(buckets.max()) == 31


def test_relative_bias_looks_up_table_per_head():
    module = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16, bidirectional=True)
    q_pos, k_pos = jnp.arange(4)[None], jnp.arange(5)[None]
    params = nn.meta.unbox(module.init(jax.random.key(0), q_pos, k_pos))
    bias = module.apply(params, q_pos, k_pos)
    assert bias.shape == (1, 3, 4, 5) and bias.dtype == jnp.float32
    table = params["params"]["table"]
    assert table.shape == (8, 3)
    for i, j in [(0, 0), (1, 3), (3, 0), (2, 4)]:
        bucket = relative_position_buckets(
            jnp.array(j - i), bidirectional=True, num_buckets=8, max_distance=16
        )
        np.testing.assert_allclose(bias[0, :, i, j], table[int(bucket)], atol=0)


def test_relative_bias_per_hypothesis_positions():
    # Step mode: each (batch, beam) query sits at its own position.
    module = RelativePositionBias(num_heads=2, num_buckets=8, max_distance=16, bidirectional=False)
    q_pos = jnp.array([[2, 5]])
    k_pos = jnp.arange(6)[None]
    params = nn.meta.unbox(module.init(jax.random.key(1), q_pos, k_pos))
    bias = module.apply(params, q_pos, k_pos)
    full = module.apply(params, jnp.arange(6)[None], k_pos)
    np.testing.assert_allclose(bias[0, :, 0], full[0, :, 2], atol=0)
    np.testing.assert_allclose(bias[0, :, 1], full[0, :, 5], atol=0)


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_absolute_positions(kind):
    module = AbsolutePositionEmbedding(kind=kind, max_position=6, features=4)
    positions = jnp.array([[0, 2, 5]])
    variables = nn.meta.unbox(module.init(jax.random.key(0), positions))
    out = module.apply(variables, positions)
    assert out.shape == (1, 3, 4)
    if kind == "learned":
        table = variables["params"]["table"]
        assert table.shape == (6, 4)
    else:
        assert variables == {}
        table = sinusoidal_table(6, 4)
    np.testing.assert_allclose(out[0], np.asarray(table)[[0, 2, 5]], atol=0)


def test_absolute_positions_have_logical_names():
    module = AbsolutePositionEmbedding(kind="learned", max_position=6, features=4)
    boxed = module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))["params"]["table"]
    assert isinstance(boxed, nn.LogicallyPartitioned)
    assert boxed.names == (None, "embed")


def test_unknown_table_kind():
    module = AbsolutePositionEmbedding(kind="alibi", max_position=6, features=4)
    with pytest.raises(ValueError, match="sinusoidal, learned"):
        module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
