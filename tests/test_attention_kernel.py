"""Tests for s2s_jax.models.attention_kernel: the fused kernels give the einsum maths.

On CPU the fused path runs ``jax.nn.dot_product_attention``'s XLA implementation, with the same
mask forms (key lengths + causal flag, or the whole bias) that cuDNN gets on a GPU; cuDNN itself
is checked on the device machine (``benchmarks/device.py``).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import fast_jit
from model_builders import replace_parts, source_mask, transformer_config

from s2s_jax.data.packing import pack_examples, shift_right_packed
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.models import attention_kernel
from s2s_jax.models.registry import pair
from s2s_jax.training.losses import shift_right

VOCAB = 23
TOL = dict(rtol=2e-5, atol=2e-5)
LENGTHS = [(5, 4), (3, 6), (7, 2), (1, 3)]  # (source, target) lengths; ragged on purpose


def _examples():
    rng = np.random.default_rng(3)
    make = lambda n: np.append(rng.integers(4, VOCAB, n - 1), EOS_ID).astype(np.int32)
    return [(make(s), make(t)) for s, t in LENGTHS]


def _padded_batch():
    examples = _examples()
    pad = lambda x, n: np.pad(x, (0, n - len(x)), constant_values=PAD_ID)
    inputs = np.stack([pad(s, 8) for s, _ in examples] + [np.zeros(8, np.int32)])  # a filler row
    targets = np.stack([pad(t, 6) for _, t in examples] + [np.zeros(6, np.int32)])
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    return {
        "inputs": inputs,
        "inputs_mask": source_mask(inputs),
        "decoder_inputs": shift_right(targets, BOS_ID),
    }, targets != PAD_ID


def _packed_batch():
    batch = pack_examples(_examples(), (12, 10))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    batch["decoder_inputs"] = shift_right_packed(batch["targets"], batch["targets_segmentation"])
    batch.pop("targets")
    return batch, batch["targets_segmentation"] != 0


def _config(kernel: str, **fields):
    fields = dict(
        d_model=16, num_heads=2, mlp_dim=32, dropout=0.0, relative_buckets=8,
        relative_max_distance=16, attention_kernel=kernel, encoder_layers=1, decoder_layers=1,
        **fields,
    )  # fmt: skip
    return transformer_config(VOCAB, VOCAB, **fields)


@functools.cache
def _params(position: str):
    batch, _ = _padded_batch()
    model = pair(_config("einsum", position=position))
    init = functools.partial(model.init, inputs_mask=batch["inputs_mask"], train=False)
    params = init(jax.random.key(0), batch["inputs"], batch["decoder_inputs"])
    rng = np.random.default_rng(1)  # random norm scales/biases: every term matters
    noise = lambda p: p + jnp.asarray(rng.normal(0.0, 0.2, p.shape), p.dtype)
    return jax.tree.map(noise, jax.tree.map(lambda x: x, params))


def _loss_and_grads(config, params, batch, real):
    model = pair(config)

    def loss(p):
        logits = model.apply(p, **batch, train=False)
        return jnp.sum(jnp.where(real[..., None], logits, 0.0) ** 2) / 100.0, logits

    (value, logits), grads = fast_jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, jnp.where(real[..., None], logits, 0.0), grads


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("position", ["sinusoidal", "rope", "t5_relative"])
def test_fused_xla_kernel_gives_the_einsum_logits_and_gradients(position, packed):
    batch, real = _packed_batch() if packed else _padded_batch()
    params = _params(position)
    reference = _loss_and_grads(_config("einsum", position=position), params, batch, real)
    fused = _loss_and_grads(_config("xla", position=position), params, batch, real)
    np.testing.assert_allclose(fused[0], reference[0], **TOL)
    np.testing.assert_allclose(fused[1], reference[1], **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), fused[2], reference[2])


def test_fused_kernel_is_really_used_and_needs_no_weights():
    batch, _ = _padded_batch()
    config = _config("xla", position="sinusoidal")
    model = pair(config)
    params = _params("sinusoidal")
    hlo = jax.jit(lambda p: model.apply(p, **batch, train=False)).lower(params).as_text()
    einsum = jax.jit(
        lambda p: pair(_config("einsum", position="sinusoidal")).apply(p, **batch, train=False)
    )
    assert hlo != einsum.lower(params).as_text()  # another program: the kernel was switched
    # The weights are still there for whoever asks (attention plots): einsum runs for them.
    _, weights = model.apply(
        params,
        batch["inputs"],
        batch["inputs_mask"],
        train=False,
        method=lambda m, x, mask, train: m.decode(
            m.encode(x, mask, train=train), batch["decoder_inputs"], train=train,
            return_attention=True,
        ),
    )  # fmt: skip
    assert weights.shape == (5, 6, 8)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_bfloat16_fused_kernel_tracks_the_einsum_kernel():
    batch, real = _padded_batch()
    params = _params("sinusoidal")
    configs = [
        replace_parts(_config(k, position="sinusoidal"), dtype="bfloat16")
        for k in ("einsum", "xla")
    ]
    (_, ref, _), (_, fused, _) = (_loss_and_grads(c, params, batch, real) for c in configs)
    np.testing.assert_allclose(fused, ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kernel, dtype, dropout, weights, expected",
    [
        ("auto", "bfloat16", False, False, "einsum"),  # no GPU here
        ("xla", "float32", False, False, "xla"),
        ("xla", "float32", True, False, "einsum"),  # dropout on the weights needs them
        ("xla", "float32", False, True, "einsum"),
        ("einsum", "bfloat16", False, False, "einsum"),
    ],
)
def test_kernel_choice(kernel, dtype, dropout, weights, expected):
    chosen = attention_kernel.choose(kernel, dtype, 64, dropout=dropout, need_weights=weights)
    assert chosen == expected


def test_auto_picks_cudnn_only_where_it_runs(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    choose = functools.partial(attention_kernel.choose, dropout=False, need_weights=False)
    assert choose("auto", "bfloat16", 64) == "cudnn"
    assert choose("auto", "bfloat16", 64, keys=64) == "einsum"  # measured slower at 64 keys
    assert choose("cudnn", "bfloat16", 64, keys=64) == "cudnn"  # asked for: always
    assert choose("auto", "float32", 64) == "einsum"
    assert choose("auto", "bfloat16", 12) == "einsum"  # not a multiple of 8
    with pytest.raises(ValueError, match="compute dtype is float32.*attention_kernel='auto'"):
        choose("cudnn", "float32", 64)


def test_cudnn_without_a_gpu_names_the_fix():
    with pytest.raises(ValueError, match="not an NVIDIA GPU.*Use attention_kernel='auto'"):
        attention_kernel.choose("cudnn", "bfloat16", 64, dropout=False, need_weights=False)


def test_unknown_kernel_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="attention_kernel.*einsum"):
        dataclasses.replace(_config("einsum").encoder, attention_kernel="flash")


def test_key_lengths_keep_one_key_for_an_all_padding_row():
    mask = jnp.array([[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(attention_kernel.key_lengths(mask), [2, 1])
