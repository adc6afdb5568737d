"""Tests for s2s_jax.models.cudnn_lstm: the packed-kernel path of RecurrentStack and its config.

On CPU the "reference" kernel (``jax.experimental.rnn.lstm_ref`` on the unpacked weights)
stands in for cuDNN: it reads the same packed weight vector, so these tests check the packing,
the padding and reverse-direction semantics and the parameter layout; the GPU kernel itself is
checked against the scan by ``benchmarks/gpu_lstm_check.py``.
"""

import functools
import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import fast_jit

from s2s_jax.models import cudnn_lstm
from s2s_jax.models.encoders.rnn import RecurrentEncoder
from s2s_jax.models.rnn import RecurrentStack
from s2s_jax.models.rnn_config import RNNEncoderConfig

ROOT = Path(__file__).resolve().parent.parent
HIDDEN, FEATURES, LENGTH = 4, 5, 6
LENGTHS = (6, 2, 0)  # ragged, trailing padding, and an empty row (all-PAD in a padded batch)
# Both sides compute the same float32 maths in different op orders (lstm_ref: per-gate matmuls
# plus two biases; the scan: one fused matmul); observed differences are ~5e-7 of each array's
# scale. 1e-5 of the scale leaves a wide margin and is far below the O(0.1) change that a
# swapped gate, a transposed matrix or padding leaking into a state causes.
TOL = 1e-5


# cuDNN's own float32 GEMMs and gate maths against XLA's (GPU only): on an H200 they differ by
# up to ~6e-6 of each array's scale even at W1 sizes (32 steps, hidden 512); 1e-4 keeps a margin
# and still catches any layout or padding error.
GPU_TOL = 1e-4


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls: on a GPU the default may be TF32 (also for cuDNN's LSTM)."""
    with jax.default_matmul_precision("float32"):
        yield


def _assert_close(actual, expected, tol=TOL):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        scale = float(np.max(np.abs(e))) or 1.0
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale)


def _shapes(module, *args):
    """The boxed parameter shapes of ``module.init`` (nothing compiled)."""
    return jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0), *args)


def _batch():
    x = jax.random.normal(jax.random.key(1), (len(LENGTHS), LENGTH, FEATURES))
    mask = jnp.arange(LENGTH)[None, :] < jnp.array(LENGTHS)[:, None]
    return x, mask


def _stack(bidirectional, kernel):
    return RecurrentStack(
        "lstm", HIDDEN, num_layers=2, bidirectional=bidirectional, dropout=0.3, kernel=kernel
    )


@pytest.mark.parametrize(
    "kernel",
    [
        "reference",
        pytest.param(
            "cudnn", marks=pytest.mark.skipif(not cudnn_lstm.on_gpu(), reason="needs a GPU")
        ),
    ],
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_kernel_matches_scan_outputs_finals_and_gradients(bidirectional, kernel):
    x, mask = _batch()
    scan, packed = _stack(bidirectional, "scan"), _stack(bidirectional, kernel)
    params = nn.meta.unbox(_shapes(scan, x, mask))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), params)

    def run(module, params, x):
        # train=True: the seeded dropout between the layers must be the same on both paths.
        rngs = {"dropout": jax.random.key(3)}
        outputs, finals = module.apply(params, x, mask, train=True, rngs=rngs)
        loss = jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(leaf**3) for leaf in jax.tree.leaves(finals))
        return loss, (outputs, finals)

    @fast_jit
    def both(params, x):
        grad = jax.grad(run, argnums=(1, 2), has_aux=True)
        return grad(scan, params, x), grad(packed, params, x)

    (scan_grads, (scan_out, scan_finals)), (grads, (out, finals)) = both(params, x)
    assert out.shape == (3, LENGTH, HIDDEN * (2 if bidirectional else 1))
    np.testing.assert_array_equal(out[~mask], 0.0)
    np.testing.assert_array_equal(jax.tree.leaves(finals)[0][2], 0.0)  # the empty row
    tol = TOL if kernel == "reference" else GPU_TOL
    _assert_close(out, scan_out, tol)
    _assert_close(finals, scan_finals, tol)
    _assert_close(grads, scan_grads, tol)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_params_tree_is_the_same_for_every_kernel(bidirectional):
    """Same names, shapes, logical axes and initial values: a checkpoint moves between kernels."""
    x, mask = _batch()
    boxed = {
        kernel: _shapes(_stack(bidirectional, kernel), x, mask) for kernel in ("scan", "reference")
    }
    assert jax.tree.structure(boxed["scan"]) == jax.tree.structure(boxed["reference"])
    leaves = [jax.tree.leaves(v, is_leaf=nn.meta.is_axis_metadata) for v in boxed.values()]
    for a, b in zip(*leaves, strict=True):
        assert (a.names, a.value.shape, a.value.dtype) == (b.names, b.value.shape, b.value.dtype)

    def init(kernel):  # one layer is enough for the values (the layers' names are checked above)
        module = RecurrentStack("lstm", HIDDEN, bidirectional=bidirectional, kernel=kernel)
        return nn.meta.unbox(
            fast_jit(functools.partial(module.init, train=False))(jax.random.key(0), x, mask)
        )

    jax.tree.map(np.testing.assert_array_equal, init("scan"), init("reference"))


def test_packing_matches_the_kernel_layout():
    """Our fused [in, 4H] kernels transpose into the kernel's W_ih [4H, in]; the bias is b_hh."""
    rng = np.random.default_rng(0)
    fwd, bwd = (
        tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((3, 8), (2, 8), (8,)))
        for _ in range(2)
    )
    packed = cudnn_lstm.pack_lstm_weights([fwd, bwd])
    from jax.experimental import rnn as experimental_rnn

    assert packed.shape == (experimental_rnn.get_num_params_in_lstm(3, 2, 1, True),)
    w_ih, w_hh, b_ih, b_hh = experimental_rnn.unpack_lstm_weights(packed, 3, 2, 1, True)
    for direction, (w_in, w_rec, bias) in enumerate([fwd, bwd]):
        np.testing.assert_array_equal(w_ih[direction], w_in.T)
        np.testing.assert_array_equal(w_hh[direction], w_rec.T)
        np.testing.assert_array_equal(b_ih[direction], 0.0)
        np.testing.assert_array_equal(b_hh[direction], bias)


def test_encoder_cudnn_config_runs_the_kernel_on_the_scan_params(monkeypatch):
    """The config's "cudnn" reaches the stack; lstm_ref stands in for the GPU kernel here."""
    monkeypatch.setitem(cudnn_lstm.KERNELS, "cudnn", cudnn_lstm.KERNELS["reference"])
    monkeypatch.setattr(cudnn_lstm, "on_gpu", lambda: True)
    kw = dict(vocab_size=7, embed_dim=FEATURES, hidden_size=HIDDEN, num_layers=2)
    kw.update(bidirectional=True)
    scan = RecurrentEncoder(RNNEncoderConfig(**kw, lstm_kernel="scan"))
    packed = RecurrentEncoder(RNNEncoderConfig(**kw, lstm_kernel="cudnn"))
    ids = jnp.array([[3, 4, 5, 6], [5, 6, 0, 0]])
    mask = ids != 0
    shapes = _shapes(scan, ids, mask)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), nn.meta.unbox(shapes)
    )
    run = fast_jit(lambda p: [m.apply(p, ids, mask, train=False) for m in (scan, packed)])
    expected, actual = run(params)
    _assert_close(actual, expected)


def test_auto_resolves_to_cudnn_only_for_float32_lstm_on_gpu(monkeypatch):
    resolve = cudnn_lstm.resolve_lstm_kernel
    monkeypatch.setattr(cudnn_lstm, "on_gpu", lambda: False)
    assert resolve("auto", "lstm", jnp.float32) == "scan"
    monkeypatch.setattr(cudnn_lstm, "on_gpu", lambda: True)
    assert resolve("auto", "lstm", jnp.float32) == "cudnn"
    assert resolve("auto", "gru", jnp.float32) == "scan"
    assert resolve("auto", "lstm", jnp.bfloat16) == "scan"
    assert resolve("scan", "gru", jnp.bfloat16) == "scan"


@pytest.mark.parametrize(
    "cell, dtype, on_gpu, reason",
    [
        ("lstm", jnp.float32, False, "needs a GPU"),
        ("gru", jnp.float32, True, "LSTM cells only"),
        ("lstm", jnp.bfloat16, True, "float32 only"),
    ],
)
def test_cudnn_where_it_cannot_run_names_why_and_the_fix(monkeypatch, cell, dtype, on_gpu, reason):
    monkeypatch.setattr(cudnn_lstm, "on_gpu", lambda: on_gpu)
    with pytest.raises(ValueError, match=reason) as error:
        cudnn_lstm.resolve_lstm_kernel("cudnn", cell, dtype)
    assert "lstm_kernel='auto'" in str(error.value) and "'scan'" in str(error.value)


@pytest.mark.skipif(cudnn_lstm.on_gpu(), reason="checks the error on a machine without a GPU")
def test_cudnn_encoder_on_cpu_fails_at_trace_time_naming_the_fix():
    encoder = RecurrentEncoder(
        RNNEncoderConfig(vocab_size=7, hidden_size=HIDDEN, lstm_kernel="cudnn")
    )
    ids = jnp.ones((1, 3), jnp.int32)
    with pytest.raises(ValueError, match="needs a GPU.*lstm_kernel='auto'"):
        _shapes(encoder, ids, ids > 0)


def test_config_validates_lstm_kernel():
    assert RNNEncoderConfig().lstm_kernel == "scan"  # measured faster than cuDNN on an H200
    with pytest.raises(ValueError, match=r"lstm_kernel='cuda'.*'auto', 'scan', 'cudnn'"):
        RNNEncoderConfig(lstm_kernel="cuda")
    with pytest.raises(ValueError, match="LSTM cells in float32 only.*lstm_kernel='auto'"):
        RNNEncoderConfig(cell="gru", lstm_kernel="cudnn")
    with pytest.raises(ValueError, match="LSTM cells in float32 only"):
        RNNEncoderConfig(dtype="bfloat16", lstm_kernel="cudnn")
    RNNEncoderConfig(cell="gru", dtype="bfloat16", lstm_kernel="auto")  # auto falls back


def test_gpu_lstm_check_script_runs_tiny_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location(
        "gpu_lstm_check", ROOT / "benchmarks" / "gpu_lstm_check.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--tiny", "--steps", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "bidirectional=" in line]
    assert len(lines) == 2 and all("speedup" in line and "max_abs_diff" in line for line in lines)
