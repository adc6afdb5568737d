import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2s_jax.training.optimizer import SCHEDULES, OptimizerConfig, make_optimizer


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_warmup_and_peak(name):
    cfg = OptimizerConfig(schedule=name, learning_rate=1e-3, warmup_steps=10, num_steps=100)
    _, schedule = make_optimizer(cfg)
    # rsqrt counts step 0 as step 1 (lr / warmup); float32 rounding needs the 1e-6 slack.
    assert float(schedule(0)) <= 1e-4 * (1 + 1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1e-3, rtol=1e-5)
    assert float(schedule(5)) < float(schedule(10))
    if name != "constant":
        assert float(schedule(99)) < 1e-3


def test_cosine_ends_near_zero():
    _, schedule = make_optimizer(OptimizerConfig(schedule="cosine", warmup_steps=0, num_steps=50))
    assert float(schedule(50)) < 1e-6


def test_clipping_bounds_update():
    # Adam's first update is ~lr * sign(g) with or without clipping, so two steps are compared:
    # the second depends on the first gradient's size, which clipping changes (500 -> 1).
    cfg = OptimizerConfig(optimizer="adam", schedule="constant", warmup_steps=0, grad_clip_norm=1.0)
    tx, _ = make_optimizer(cfg)
    grads = [jnp.array([300.0, 400.0, 0.0]), jnp.array([0.3, 0.4, 0.0])]  # norms 500 and 0.5

    def second_update(tx, grads):
        params = {"w": jnp.zeros(3)}
        state = tx.init(params)
        for g in grads:
            update, state = tx.update({"w": g}, state, params)
        return np.asarray(update["w"])

    plain = optax.adam(cfg.learning_rate)
    clipped_by_hand = [g / max(1.0, float(jnp.linalg.norm(g))) for g in grads]
    np.testing.assert_allclose(second_update(tx, grads), second_update(plain, clipped_by_hand))
    assert not np.allclose(second_update(tx, grads), second_update(plain, grads), rtol=0.1)


@pytest.mark.parametrize("field,value", [("optimizer", "sgdx"), ("schedule", "step")])
def test_unknown_names(field, value):
    with pytest.raises(ValueError, match="valid"):
        OptimizerConfig(**{field: value})


def test_from_section_ignores_other_keys():
    cfg = OptimizerConfig.from_section({"optimizer": "adamw", "log_every": 3, "weight_decay": 0.1})
    assert cfg.optimizer == "adamw" and cfg.weight_decay == 0.1
