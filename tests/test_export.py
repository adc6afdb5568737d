"""Tests for s2s_jax.export: Marian (Hugging Face, CTranslate2) and StableHLO exports."""

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from fast_compile import fast_jit
from model_builders import replace_parts, rnn_config, source_mask, transformer_config

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.config import load_train_config, to_dict
from s2s_jax.data.batching import encode_examples, pad_batch
from s2s_jax.data.sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece
from s2s_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharVocab
from s2s_jax.decoding.generate import generate
from s2s_jax.export import command, tokenizers
from s2s_jax.export.marian import check_mappable, to_marian
from s2s_jax.export.workdir import load
from s2s_jax.models import marian, marian_config, registry
from s2s_jax.run.components import build
from s2s_jax.run.run_info import write_run_info
from s2s_jax.training.step import train_step

torch = pytest.importorskip("torch")
# MarianTokenizer asks for sacremoses (Moses punctuation normalisation), which s2s_jax models
# are not trained with; the export's tokenizer works without it (see export/tokenizers.py).
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
transformers = pytest.importorskip("transformers")

# The tiny reverse Transformer made Marian-shaped: post-LN with torch's LayerNorm epsilon and a
# final logits bias (the other defaults already map: sinusoidal positions, relu, shared and
# tied embeddings).
MARIAN_OVERRIDES = [
    f"--config.model.{side}.{key}"
    for side in ("encoder", "decoder")
    for key in ("pre_norm=false", "norm_epsilon=1e-5")
] + ["--config.model.decoder.final_logits_bias=true"]
TRAIN_STEPS = 300  # enough for outputs that end with EOS of their own, well before the cap
SENTENCES = ["0123", "98765", "555", "102938", "4444", "7", "12", "860", "31415", "271828"]
# float32 on CPU: torch and XLA sum in different orders (~1e-6 on logits of magnitude ~5; see
# tests/test_marian.py, whose mapping errors move logits by >= 0.2).
LOGITS_ATOL = 1e-5


def _spread(path, x, rng):
    """Random weights with well-separated logits in which every bias and norm counts."""
    name, x = jax.tree_util.keystr(path), np.asarray(x)
    if "scale" in name:
        return (1.0 + 0.2 * rng.standard_normal(x.shape)).astype(x.dtype)
    if x.ndim == 1 or "bias" in name:
        return (0.2 * rng.standard_normal(x.shape)).astype(x.dtype)
    return (rng.standard_normal(x.shape) * x.shape[0] ** -0.5).astype(x.dtype)


def _reverse_batches(c, count: int, rows: int = 64) -> list[dict]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(count):
        strings = ["".join(rng.choice(list("0123456789"), rng.integers(3, 7))) for _ in range(rows)]
        examples = [{"inputs": s, "targets": s[::-1]} for s in strings]
        encoded = encode_examples(examples, c.data.src_vocab, c.data.tgt_vocab)
        batches.append(pad_batch(encoded, (7, 7)))
    return batches


def _write_workdir(path: Path, overrides=(), steps: int = TRAIN_STEPS) -> Path:
    """A trained workdir as `s2s train` leaves one (config.json, a checkpoint), trained by a
    fast-compiling loop over one batch shape (`s2s train` would take ~25 s here)."""
    config = load_train_config(
        "experiments/reverse_transformer.py:tiny",
        [*MARIAN_OVERRIDES, f"--config.train.num_steps={steps}", *overrides],
    )
    c = build(config, workdir=path)
    state = c.init_state()
    if steps:
        step = fast_jit(functools.partial(train_step, model=c.model, tx=c.tx, schedule=c.schedule))
        batches = _reverse_batches(c, 16)
        for i in range(steps):
            state, _ = step(state, batches[i % len(batches)], jax.random.key(i))
    write_run_info(path, to_dict(config))
    with Checkpointer(path / "checkpoints", every_steps=1, keep=1) as ckpt:
        ckpt.save(steps, state, data_state=c.data.train.get_state(),
                  config=c.checkpoint_config(), force=True)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return _write_workdir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def trained(workdir):
    return load(workdir)


@pytest.fixture(scope="module")
def batch(trained):
    c = trained.components
    examples = [{"inputs": s, "targets": ""} for s in SENTENCES]
    encoded = encode_examples(examples, c.data.src_vocab, c.data.tgt_vocab)
    return pad_batch(encoded, (7, 1))


@functools.cache
def _decode_fn(model, cfg):
    return fast_jit(functools.partial(generate, model=model, cfg=cfg))


def _ours(trained, batch, method: str) -> tuple[list[str], np.ndarray]:
    """s2s_jax's strings and lengths: beam 4 with alpha 0 (summed log-probs), or greedy."""
    c = trained.components
    cfg = dataclasses.replace(c.decode_config, method=method, beam_size=4, alpha=0.0)
    result = _decode_fn(c.model, cfg)(trained.params, batch["inputs"], batch["inputs_mask"])
    sequences = np.asarray(result.sequences[:, 0])
    return [c.data.tgt_vocab.decode(s) for s in sequences], np.asarray(result.lengths[:, 0])


def _export(workdir, target, out, *extra) -> Path:
    assert command.main(["--workdir", str(workdir), "--to", target, str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def hf_dir(workdir, tmp_path_factory):
    return _export(workdir, "hf-marian", tmp_path_factory.mktemp("exports") / "hf")


# ---------------------------------------------------------------------------------------------
# to_marian
# ---------------------------------------------------------------------------------------------


def _bridged_marian(variant: str):
    """A randomised MarianMTModel ("shared": tied, scaled, relu; "separate": two vocabularies,
    untied head, unscaled, swish)."""
    hf_config = marian_config.marian_test_config(
        vocab_size=30, d_model=16, layers=2, heads=2, ffn=32, max_len=32,
        activation="swish" if variant == "separate" else "relu",
    )  # fmt: skip
    if variant == "separate":
        hf_config.share_encoder_decoder_embeddings = False
        hf_config.tie_word_embeddings = False
        hf_config.decoder_vocab_size = 24
        hf_config.scale_embedding = False
    torch.manual_seed(0)
    model = transformers.MarianMTModel(hf_config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
    return model


@pytest.mark.parametrize("variant", ["shared", "separate"])
@pytest.mark.parametrize("scan_layers", [True, False])
def test_to_marian_inverts_the_bridge_exactly(variant, scan_layers):
    model = _bridged_marian(variant)
    config, params = marian.from_marian(model, scan_layers=scan_layers)
    exported = to_marian(config, params)
    want, got = model.state_dict(), exported.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(got[key].numpy(), value.numpy(), err_msg=key)
    for key in (
        "vocab_size",
        "decoder_vocab_size",
        "activation_function",
        "scale_embedding",
        "share_encoder_decoder_embeddings",
        "tie_word_embeddings",
        "d_model",
    ):
        assert getattr(exported.config, key) == getattr(model.config, key), key


def _hf_logits(model, inputs, decoder_inputs) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(inputs),
            attention_mask=torch.tensor(inputs != PAD_ID),
            decoder_input_ids=torch.tensor(decoder_inputs),
        )
    return out.logits.numpy()


INPUTS = np.array([[5, 9, 7, 4, EOS_ID], [6, 8, EOS_ID, PAD_ID, PAD_ID]])
DECODER_INPUTS = np.array([[BOS_ID, 7, 4, 5, 8], [BOS_ID, 9, EOS_ID, PAD_ID, PAD_ID]])


def _s2s_logits(module, params) -> np.ndarray:
    kw = dict(inputs_mask=source_mask(INPUTS), train=False)
    apply = fast_jit(functools.partial(module.apply, **kw))
    return np.asarray(apply(params, INPUTS, DECODER_INPUTS))


def test_logits_of_the_trained_workdir_match(trained):
    model = to_marian(trained.model_config, trained.params)
    ours = _s2s_logits(trained.components.model, {"params": trained.params})
    np.testing.assert_allclose(
        _hf_logits(model, INPUTS, DECODER_INPUTS), ours, rtol=0, atol=LOGITS_ATOL
    )


def test_logits_match_untied_unbiased_separate_unrolled():
    """An untied head's bias goes into final_logits_bias; no logits bias is written as zeros;
    separate tables; unrolled stacks of different depths; bf16 parameters."""
    config = transformer_config(
        12, 10, encoder_layers=2, decoder_layers=1, tie_output=False, final_logits_bias=False,
        d_model=16, num_heads=4, mlp_dim=24, pre_norm=False, norm_epsilon=1e-5,
        activation="gelu", scan_layers=False, scale_embeddings=False, param_dtype="bfloat16",
    )  # fmt: skip
    module = registry.pair(config)
    shapes = jax.eval_shape(
        functools.partial(module.init, inputs_mask=source_mask(INPUTS), train=False),
        jax.random.key(0), INPUTS, DECODER_INPUTS,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: _spread(p, np.zeros(x.shape, x.dtype), rng), nn.meta.unbox(shapes)["params"]
    )
    ours = _s2s_logits(module, {"params": params})
    model = to_marian(config, params)
    assert not model.config.tie_word_embeddings
    assert not model.config.share_encoder_decoder_embeddings
    np.testing.assert_allclose(
        _hf_logits(model, INPUTS, DECODER_INPUTS), ours, rtol=0, atol=LOGITS_ATOL
    )


MAPPABLE = transformer_config(
    20, 20, share_embeddings=True, final_logits_bias=True, d_model=16, num_heads=2, mlp_dim=32,
    pre_norm=False, norm_epsilon=1e-5,
)  # fmt: skip


def _side(config, side, **fields):
    part = dataclasses.replace(getattr(config, side), **fields)
    return dataclasses.replace(config, **{side: part})


@pytest.mark.parametrize(
    "config, message",
    [
        (replace_parts(MAPPABLE, pre_norm=True), r"model.encoder.pre_norm=True .* post-LN"),
        (_side(MAPPABLE, "decoder", pre_norm=True), r"model.decoder.pre_norm=True"),
        (replace_parts(MAPPABLE, norm="rmsnorm"), r"model.encoder.norm='rmsnorm' .* LayerNorm"),
        (replace_parts(MAPPABLE, norm_epsilon=1e-6), r"model.encoder.norm_epsilon=1e-06 .*1e-5"),
        (replace_parts(MAPPABLE, position="rope"), r"model.encoder.position='rope'"),
        (replace_parts(MAPPABLE, position="t5_relative"), r"position='t5_relative'"),
        (replace_parts(MAPPABLE, position="learned"), r"position='learned'"),
        (replace_parts(MAPPABLE, activation="swiglu"), r"activation='swiglu' .* ungated"),
        (replace_parts(MAPPABLE, head_dim=4), r"model.encoder.head_dim=4 .* d_model / num_heads"),
        (_side(MAPPABLE, "decoder", mlp_dim=64), r"decoder.mlp_dim=64 .* model.encoder.mlp_dim=32"),
        (_side(MAPPABLE, "decoder", scale_embeddings=False), r"decoder.scale_embeddings=False"),
        (rnn_config(20, 20), r"model.encoder.type='rnn' .* Transformer"),
        (dataclasses.replace(MAPPABLE, decoder_type="rnn"), r"model.decoder.type='rnn'"),
        (_side(MAPPABLE, "encoder", input="features", input_features=3), r"encoder.input='feat"),
    ],
)
def test_unmappable_configs_name_their_first_field(config, message):
    with pytest.raises(ValueError, match=message):
        check_mappable(config)


def test_free_fields_map():
    config = replace_parts(
        MAPPABLE, dropout=0.3, scan_layers=False, dtype="bfloat16", attention_kernel="einsum",
        remat_policy="full", head_dim=8, max_position=64,
    )  # fmt: skip
    check_mappable(config)


# ---------------------------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------------------------


def test_char_vocab_sentencepiece_model_has_the_same_ids():
    import sentencepiece

    vocab = CharVocab("0123456789+ ab")
    model = sentencepiece.SentencePieceProcessor(model_proto=tokenizers.char_model(vocab.chars))
    assert model.piece_size() == vocab.size
    assert [model.pad_id(), model.bos_id(), model.eos_id(), model.unk_id()] == [0, 1, 2, 3]
    for text in ["12+3", " a b ", "0", "", "ba  9"]:
        assert model.encode(text) == vocab.encode(text), text
        assert model.decode(vocab.encode(text)) == text
    assert model.encode("1x") == [vocab.encode("1")[0], UNK_ID]  # CharVocab would raise


def test_marian_tokenizer_of_a_sentencepiece_workdir_gives_its_ids(tmp_path):
    sentences = ["the cat sees the dog.", "a dog has bread.", "the king wants water."] * 5
    path = train_sentencepiece(sentences, tmp_path / "spm.model", vocab_size=24)
    ours = SentencePieceTokenizer(path)
    out = tmp_path / "tok"
    out.mkdir()
    tokenizers.write_marian_tokenizer(out, ours, ours)
    hf = transformers.MarianTokenizer.from_pretrained(str(out))
    for text in ["the dog sees a cat.", "water."]:
        ids = hf(text)["input_ids"]
        assert ids == [*ours.encode(text), EOS_ID]
        assert hf.decode(ids, skip_special_tokens=True) == ours.decode(ids)


def test_marian_tokenizer_of_two_vocabularies_keeps_each_sides_ids(tmp_path):
    source, target = CharVocab("abcé"), CharVocab("0123456789")
    tokenizers.write_marian_tokenizer(tmp_path, source, target)
    assert (tmp_path / "target_vocab.json").is_file()
    hf = transformers.MarianTokenizer.from_pretrained(str(tmp_path))
    assert hf("cabé")["input_ids"] == [*source.encode("cabé"), EOS_ID]
    assert hf(text_target="907")["input_ids"] == [*target.encode("907"), EOS_ID]
    assert hf.decode([BOS_ID, *target.encode("907"), EOS_ID], skip_special_tokens=True) == "907"


# ---------------------------------------------------------------------------------------------
# s2s export end to end: Hugging Face, CTranslate2, StableHLO
# ---------------------------------------------------------------------------------------------


def test_hf_generate_and_ct2_give_our_beam4_strings(workdir, trained, batch, hf_dir, tmp_path):
    """Beam 4 ranked by summed log-probs on all three (alpha 0 = length_penalty 0: the GNMT
    penalty and HF/CTranslate2's length**penalty normalise differently otherwise), every output
    ended by an EOS the model chose (the length caps differ: ours per row, theirs per batch)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    ours, lengths = _ours(trained, batch, "beam")
    cap = trained.components.decode_config.max_length(batch["inputs"].shape[1])
    assert lengths.max() < cap and len(set(ours)) > 5  # EOS chosen, outputs depend on the input
    tokenizer = transformers.MarianTokenizer.from_pretrained(str(hf_dir))
    model = transformers.MarianMTModel.from_pretrained(str(hf_dir)).eval()
    encoded = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    np.testing.assert_array_equal(encoded["input_ids"].numpy(), batch["inputs"])
    with torch.no_grad():
        out = model.generate(
            **encoded, num_beams=4, length_penalty=0.0, early_stopping="never",
            max_new_tokens=cap, do_sample=False,
        )  # fmt: skip
    hf_strings = tokenizer.batch_decode(out, skip_special_tokens=True)
    ct2_dir = _export(workdir, "ct2", tmp_path / "ct2")
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu")
    pieces = [tokenizer.convert_ids_to_tokens(row) for row in encoded["input_ids"].tolist()]
    pieces = [[p for p in row if p != "<pad>"] for row in pieces]  # "</s>" last, as ours
    results = translator.translate_batch(
        pieces, beam_size=4, length_penalty=0.0, min_decoding_length=0, max_decoding_length=cap
    )  # min_decoding_length 0: CTranslate2 otherwise forbids an empty output (its default is 1)
    ct2_strings = [tokenizer.convert_tokens_to_string(r.hypotheses[0]) for r in results]
    agreement = {
        name: np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
        for name, theirs in (("hf", hf_strings), ("ct2", ct2_strings))
    }
    assert agreement == {"hf": 1.0, "ct2": 1.0}, (ours, hf_strings, ct2_strings)


def test_stablehlo_export_decodes_like_generate_without_s2s_jax(workdir, trained, batch, tmp_path):
    pytest.importorskip("flatbuffers")  # jax.export's serializer
    out = _export(workdir, "stablehlo", tmp_path / "hlo", "--batch", "4", "--alpha", "0")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bucket"] == {"batch": 4, "src_len": max(trained.components.data.buckets)}
    # The copied loader, run from elsewhere: it must translate with jax, numpy, sentencepiece.
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from loader import ExportedTranslator\n"
        "lines, methods = sys.stdin.read().splitlines(), ('beam', 'greedy')\n"
        "out = {m: ExportedTranslator(sys.argv[1], m).translate(lines) for m in methods}\n"
        "out['s2s_jax'] = sorted(m for m in sys.modules if m.split('.')[0] == 's2s_jax')\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], input="\n".join(SENTENCES), cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["s2s_jax"] == []
    assert got["beam"] == _ours(trained, batch, "beam")[0]
    assert got["greedy"] == _ours(trained, batch, "greedy")[0]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, nothing written
# ---------------------------------------------------------------------------------------------


def _fails(capsys, argv, words, out: Path) -> None:
    assert command.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("s2s export: error: ") and "\n" not in err, err
    assert words in err, err
    assert not any(p.name.startswith(f".{out.name}.partial") for p in out.parent.iterdir())


def test_existing_output_is_refused(workdir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    argv = ["--workdir", str(workdir), "--to", "hf-marian", str(out)]
    _fails(capsys, argv, "already exists", out)
    assert list(out.iterdir()) == []


def test_workdir_without_checkpoint_or_at_all_is_refused(workdir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((workdir / "config.json").read_text())
    out = tmp_path / "out"
    argv = ["--to", "hf-marian", str(out), "--workdir"]
    _fails(capsys, [*argv, str(empty)], "has no checkpoint", out)
    _fails(capsys, [*argv, str(tmp_path / "nope")], "does not exist", out)
    assert not out.exists()


def test_unmappable_workdir_is_refused_naming_the_field(workdir, tmp_path, capsys):
    pre_ln = tmp_path / "pre_ln"
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["encoder"]["pre_norm"] = True
    pre_ln.mkdir()
    (pre_ln / "config.json").write_text(json.dumps(config))
    (pre_ln / "checkpoints" / "1").mkdir(parents=True)  # refused before it is read
    out = tmp_path / "out"
    message = "model.encoder.pre_norm=True does not map onto Marian: Marian is post-LN"
    _fails(capsys, ["--workdir", str(pre_ln), "--to", "hf-marian", str(out)], message, out)
    assert not out.exists()


def test_a_failed_export_leaves_nothing(workdir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tokenizers, "write_marian_tokenizer", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        command.main(["--workdir", str(workdir), "--to", "hf-marian", str(out)])
    assert list(tmp_path.iterdir()) == []
