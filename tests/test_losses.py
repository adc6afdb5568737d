import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2s_jax.training.losses import cross_entropy, shift_right, token_accuracy


def test_cross_entropy_matches_optax_and_ignores_pad():
    logits = jax.random.normal(jax.random.key(0), (2, 4, 7))
    targets = jnp.array([[4, 5, 2, 0], [6, 2, 0, 0]])
    loss_sum, tokens = cross_entropy(logits, targets)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    expected = per_token[0, :3].sum() + per_token[1, :2].sum()
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-6)
    assert tokens == 5.0


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_zero_at_smoothed_optimum(eps):
    vocab = 6
    target = 3
    probs = np.full(vocab, eps / (vocab - 1))
    probs[target] = 1 - eps
    logits = jnp.log(jnp.asarray(probs))[None, None]
    loss_sum, _ = cross_entropy(logits, jnp.array([[target]]), label_smoothing=eps)
    # The smoothed target distribution itself scores exactly zero (up to float32 rounding).
    np.testing.assert_allclose(loss_sum, 0.0, atol=1e-5)
    worse, _ = cross_entropy(logits * 2.0, jnp.array([[target]]), label_smoothing=eps)
    assert worse > 1e-3


def test_token_accuracy():
    logits = jnp.eye(5)[jnp.array([[1, 2, 3], [4, 0, 0]])]
    targets = jnp.array([[1, 2, 4], [4, 0, 0]])
    correct, tokens = token_accuracy(logits, targets)
    assert (float(correct), float(tokens)) == (3.0, 4.0)


def test_shift_right():
    targets = jnp.array([[5, 6, 2, 0], [7, 2, 0, 0]])
    np.testing.assert_array_equal(shift_right(targets, 1), [[1, 5, 6, 2], [1, 7, 2, 0]])
