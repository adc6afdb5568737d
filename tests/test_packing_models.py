"""Packed batches through the models: a packed example behaves exactly as the example alone.

Covers the packing arguments of ``s2s_jax.models`` (segment ids and positions): a Transformer
encoder-decoder pair against its own unpacked path, and the refusal of every pair with a
recurrent part.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_builders import rnn_config, source_mask, transformer_config

from s2s_jax.data.packing import pack_examples, shift_right_packed
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s_jax.models.positions import segment_positions
from s2s_jax.models.registry import check_pair, pair
from s2s_jax.models.seq2seq import Seq2SeqConfig
from s2s_jax.training.losses import cross_entropy, shift_right

VOCAB = 23
# (source, target) lengths, EOS included. Packed into rows of (9, 9) first-fit gives
# row 0 = examples 0, 1 and row 1 = examples 2, 3, each row ending in padding.
LENGTHS = [(3, 4), (5, 2), (2, 5), (4, 3)]
ROW_LENGTHS = (9, 9)
# Rows of the packed batch holding each example, in example order: (row, segment).
PLACEMENT = [(0, 1), (0, 2), (1, 1), (1, 2)]
# Packed and unpacked rows run the same float32 maths on differently shaped arrays: masked keys
# get weight exactly 0, so only XLA's tiling of the matmuls and reductions differs (a few ulps per
# op, ~1e-6 on O(1) logits after two layers). 1e-5 is a wide margin over that and far below the
# O(0.1) change a single leaked key or a wrong position gives.
LOGITS_TOL = 1e-5
# The loss sums ~14 token losses of O(3); relative 1e-4 covers their float32 rounding with room.
LOSS_RTOL = 1e-4
jit = functools.partial(
    jax.jit,
    # Tiny programs: XLA's backend optimisations only cost compile time here; float32 results
    # are the same (no fast-math either way).
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)


def _examples() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    make = lambda n: np.append(rng.integers(4, VOCAB, n - 1), EOS_ID).astype(np.int32)
    return [(make(s), make(t)) for s, t in LENGTHS]


def _unpacked(examples) -> dict[str, jax.Array]:
    """One example per row, padded to the longest; decoder inputs by the plain shift."""
    src_len = max(len(s) for s, _ in examples)
    tgt_len = max(len(t) for _, t in examples)
    pad = lambda x, n: np.pad(x, (0, n - len(x)), constant_values=PAD_ID)
    inputs = jnp.asarray(np.stack([pad(s, src_len) for s, _ in examples]))
    targets = jnp.asarray(np.stack([pad(t, tgt_len) for _, t in examples]))
    return {
        "inputs": inputs,
        "inputs_mask": source_mask(inputs),
        "targets": targets,
        "decoder_inputs": shift_right(targets, BOS_ID),
    }


def _packed(examples) -> dict[str, jax.Array]:
    batch = {k: jnp.asarray(v) for k, v in pack_examples(examples, ROW_LENGTHS).items()}
    batch["decoder_inputs"] = shift_right_packed(batch["targets"], batch["targets_segmentation"])
    return batch


def _config(position: str, pre_norm: bool = True, **overrides) -> Seq2SeqConfig:
    return transformer_config(
        VOCAB,
        VOCAB,
        d_model=16,
        num_heads=2,
        mlp_dim=32,
        dropout=0.0,
        position=position,
        pre_norm=pre_norm,
        # Small enough that the packed rows reach the log-spaced buckets too.
        relative_buckets=8,
        relative_max_distance=16,
        **overrides,
    )


@functools.cache
def _params(cfg: Seq2SeqConfig):
    """Random parameters with init's tree (tracing init, no compile); random norm scales and
    biases make every term matter."""
    inputs, mask, decoder_inputs = _unpacked_shapes()
    init = functools.partial(pair(cfg).init, inputs_mask=mask, train=False)
    shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), inputs, decoder_inputs))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        centre = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(centre + rng.normal(0.0, 0.3, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _unpacked_shapes():
    batch = _unpacked(_examples())
    return batch["inputs"], batch["inputs_mask"], batch["decoder_inputs"]


def _packing_kwargs(batch) -> dict[str, jax.Array]:
    keys = ("inputs_segmentation", "targets_segmentation", "inputs_position", "targets_position")
    return {k: batch[k] for k in keys if k in batch}


@functools.cache
def _forward(cfg: Seq2SeqConfig):
    """Jitted eval forward, returning logits and the last layer's cross-attention."""
    model = pair(cfg)

    def run(m, inputs, inputs_mask, decoder_inputs, **packing):
        encoded = m.encode(
            inputs,
            inputs_mask,
            train=False,
            **{k: v for k, v in packing.items() if k.startswith("inputs")},
        )
        return m.decode(
            encoded,
            decoder_inputs,
            train=False,
            return_attention=True,
            **{k: v for k, v in packing.items() if k.startswith("targets")},
        )

    return jit(lambda params, batch: model.apply(params, **batch, method=run))


def _run(cfg, batch):
    args = {k: batch[k] for k in ("inputs", "inputs_mask", "decoder_inputs")}
    return _forward(cfg)(_params(cfg), {**args, **_packing_kwargs(batch)})


# ---------------------------------------------------------------------------------------------
# Packed == unpacked


@pytest.mark.parametrize("pre_norm", [True, False])
@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rope", "t5_relative"])
def test_packed_batch_matches_unpacked_examples(position, pre_norm):
    cfg = _config(position, pre_norm)
    examples = _examples()
    packed, unpacked = _packed(examples), _unpacked(examples)
    assert packed["inputs"].shape[0] == 2  # the examples really share rows
    packed_logits, _ = _run(cfg, packed)
    unpacked_logits, _ = _run(cfg, unpacked)

    packed_loss, packed_tokens = cross_entropy(packed_logits, packed["targets"])
    unpacked_loss, unpacked_tokens = cross_entropy(unpacked_logits, unpacked["targets"])
    assert float(packed_tokens) == float(unpacked_tokens) == sum(t for _, t in LENGTHS)
    np.testing.assert_allclose(packed_loss, unpacked_loss, rtol=LOSS_RTOL)

    for k, (row, segment) in enumerate(PLACEMENT):
        in_segment = np.asarray(packed["targets_segmentation"][row] == segment)
        np.testing.assert_array_equal(packed["targets"][row][in_segment], examples[k][1])
        np.testing.assert_allclose(
            packed_logits[row][in_segment],
            unpacked_logits[k, : LENGTHS[k][1]],
            atol=LOGITS_TOL,
            rtol=LOGITS_TOL,
        )


@pytest.mark.parametrize("position", ["rope", "t5_relative", "learned"])
def test_changing_one_segment_leaves_the_others_alone(position):
    cfg = _config(position)
    examples = _examples()
    other = list(examples)
    # Example 1 is segment 2 of row 0: new tokens, same lengths (so the same packing).
    other[1] = tuple(np.where(x == EOS_ID, EOS_ID, (x + 5) % (VOCAB - 4) + 4) for x in examples[1])
    base, base_attention = _run(cfg, _packed(examples))
    changed, changed_attention = _run(cfg, _packed(other))
    segmentation = np.asarray(_packed(examples)["targets_segmentation"])
    first = segmentation[0] == 1
    # Masked keys get softmax weight exactly 0 (exp underflows), so segment 1's maths is the
    # same op for op: equal bits, not merely close.
    np.testing.assert_array_equal(base[0][first], changed[0][first])
    np.testing.assert_array_equal(base[1], changed[1])  # the other row
    np.testing.assert_array_equal(base_attention[0][first], changed_attention[0][first])
    second = segmentation[0] == 2
    assert float(jnp.abs(base[0][second] - changed[0][second]).max()) > 1e-2


def test_cross_attention_stays_in_its_segment():
    packed = _packed(_examples())
    _, attention = _run(_config("t5_relative"), packed)  # [rows, tgt_len, src_len]
    tgt_seg = np.asarray(packed["targets_segmentation"])
    src_seg = np.asarray(packed["inputs_segmentation"])
    same = (tgt_seg[:, :, None] == src_seg[:, None, :]) & (tgt_seg[:, :, None] > 0)
    real = tgt_seg > 0
    # Padding queries (segment 0) see no key at all; their uniform weights are discarded.
    np.testing.assert_array_equal(np.where(same | ~real[:, :, None], 0.0, attention), 0.0)
    # Each real query's weights sum to 1 over its own segment's source (float32 softmax sum).
    np.testing.assert_allclose(np.asarray(attention).sum(-1)[real], 1.0, atol=1e-6)


def test_positions_default_to_within_segment_positions():
    packed = _packed(_examples())
    for side in ("inputs", "targets"):
        np.testing.assert_array_equal(
            segment_positions(packed[f"{side}_segmentation"]), packed[f"{side}_position"]
        )
    cfg = _config("sinusoidal")
    without = {k: v for k, v in packed.items() if not k.endswith("_position")}
    np.testing.assert_array_equal(_run(cfg, without)[0], _run(cfg, packed)[0])


def test_packed_gradients_match_unpacked():
    # One layer per stack and unrolled: the cheapest backward pass to compile; the masks and
    # positions it checks are the same in every layer.
    cfg = _config("t5_relative", encoder_layers=1, decoder_layers=1, scan_layers=False)
    model = pair(cfg)

    def loss(params, batch):
        kwargs = _packing_kwargs(batch) | {"inputs_mask": batch["inputs_mask"]}
        logits = model.apply(params, batch["inputs"], batch["decoder_inputs"], train=True, **kwargs)
        return cross_entropy(logits, batch["targets"])[0]

    both = lambda params, batches: [jax.grad(loss)(params, batch) for batch in batches]
    examples = _examples()
    packed, unpacked = jit(both)(_params(cfg), (_packed(examples), _unpacked(examples)))
    # Gradients are sums over ~14 tokens of products like the logits above: same margin.
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, atol=1e-4, rtol=1e-4), packed, unpacked
    )
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(packed)) > 1e-2


# ---------------------------------------------------------------------------------------------
# Errors


def _trace(model, *args, method=None, **kwargs):
    """Runs ``model.init`` abstractly: errors raised while tracing, nothing compiled."""
    init = functools.partial(model.init, method=method, **kwargs)
    return jax.eval_shape(init, jax.random.key(0), *args)


def test_segmentation_on_one_side_only_is_rejected():
    cfg = _config("sinusoidal")
    model = pair(cfg)
    packed = _packed(_examples())
    with pytest.raises(ValueError, match="both segmentations"):
        _trace(
            model,
            packed["inputs"],
            packed["decoder_inputs"],
            inputs_mask=packed["inputs_mask"],
            train=False,
            targets_segmentation=packed["targets_segmentation"],
        )
    with pytest.raises(ValueError, match="both segmentations"):
        _trace(
            model,
            packed["inputs"],
            packed["decoder_inputs"],
            inputs_mask=packed["inputs_mask"],
            train=False,
            inputs_segmentation=packed["inputs_segmentation"],
        )


def test_mismatched_packing_shapes_are_rejected():
    model = pair(_config("rope"))
    packed = _packed(_examples())
    with pytest.raises(ValueError, match=r"inputs_position has shape \(2, 8\)"):
        _trace(
            model,
            packed["inputs"],
            packed["inputs_mask"],
            train=False,
            method=model.encode,
            inputs_segmentation=packed["inputs_segmentation"],
            inputs_position=packed["inputs_position"][:, :8],
        )


def test_step_decoding_rejects_a_packed_source():
    model = pair(_config("sinusoidal"))
    packed = _packed(_examples())

    def start(m):
        encoded = m.encode(
            packed["inputs"],
            packed["inputs_mask"],
            train=False,
            inputs_segmentation=packed["inputs_segmentation"],
        )
        return m.init_decode(encoded, 4)

    with pytest.raises(ValueError, match="init_decode got a packed source"):
        _trace(model, method=start)


def _with_recurrent_parts(encoder: str, decoder: str) -> Seq2SeqConfig:
    """A pair whose ``encoder`` / ``decoder`` sides are the recurrent or Transformer part."""
    rnn = rnn_config(VOCAB, VOCAB, embed_dim=16, hidden_size=16, attention="bahdanau")
    transformer = _config("rope")
    parts = {"rnn": rnn, "transformer": transformer}
    config = Seq2SeqConfig(
        encoder, decoder, parts[encoder].encoder, parts[decoder].decoder, share_embeddings=False
    )
    check_pair(config)
    return config


# (encoder, decoder, packing arrays given, the part that refuses: the first array's side, or
# the recurrent decoder for a source a Transformer encoder packed).
REFUSALS = [
    ("rnn", "rnn", ("inputs_segmentation", "targets_segmentation"), "RecurrentEncoder"),
    ("rnn", "rnn", ("targets_segmentation",), "RecurrentDecoder"),
    ("rnn", "rnn", ("inputs_position",), "RecurrentEncoder"),
    ("rnn", "transformer", ("inputs_segmentation", "targets_segmentation"), "RecurrentEncoder"),
    ("transformer", "rnn", ("inputs_segmentation", "targets_segmentation"), "RecurrentDecoder"),
    ("transformer", "rnn", ("inputs_segmentation",), "RecurrentDecoder"),
]


@pytest.mark.parametrize("encoder, decoder, packing, refusing", REFUSALS)
def test_recurrent_parts_refuse_packing(encoder, decoder, packing, refusing):
    model = pair(_with_recurrent_parts(encoder, decoder))
    packed = _packed(_examples())
    kwargs = {name: packed[name] for name in packing}
    with pytest.raises(ValueError, match="packing needs Transformer encoder and decoder") as error:
        _trace(
            model,
            packed["inputs"],
            packed["decoder_inputs"],
            inputs_mask=packed["inputs_mask"],
            train=False,
            **kwargs,
        )
    assert "data.pack_length=0" in str(error.value)
    assert packing[0] in str(error.value)
    assert str(error.value).startswith(refusing)


def test_recurrent_decoder_refuses_a_packed_source_for_step_decoding():
    model = pair(_with_recurrent_parts("transformer", "rnn"))
    packed = _packed(_examples())

    def start(m):
        encoded = m.encode(
            packed["inputs"],
            packed["inputs_mask"],
            train=False,
            inputs_segmentation=packed["inputs_segmentation"],
        )
        return m.init_decode(encoded, 4)

    with pytest.raises(ValueError, match="RecurrentDecoder got inputs_segmentation"):
        _trace(model, method=start)
