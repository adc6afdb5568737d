"""Tests of benchmarks/ (the W1-W4 runner and its peers) at tiny sizes."""

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` is not installed

from benchmarks import (  # noqa: E402
    compare,
    peak_rss,
    peers,
    report,
    s2s_side,
    training_systems,
    workloads,
)
from benchmarks.harness import System, alternate  # noqa: E402
from s2s_jax.config import ConfigError  # noqa: E402
from s2s_jax.data.vocab import EOS_ID  # noqa: E402
from s2s_jax.models.registry import build_model, pair  # noqa: E402

VOCAB = workloads.TINY.vocab


def test_synthetic_batches_are_seeded_unpadded_and_end_with_eos():
    kw = dict(batch=3, src_len=5, tgt_len=4, vocab=VOCAB, count=2, seed=7)
    first, again = workloads.synthetic_batches(**kw), workloads.synthetic_batches(**kw)
    assert first[0]["inputs"].shape == (3, 5) and first[0]["targets"].shape == (3, 4)
    np.testing.assert_array_equal(first[1]["inputs"], again[1]["inputs"])
    assert not np.array_equal(first[0]["inputs"], first[1]["inputs"])
    for batch in first:
        assert set(batch) == {"inputs", "inputs_mask", "targets"}
        for ids in (batch["inputs"], batch["targets"]):
            assert np.all(ids[:, -1] == EOS_ID)
            assert ids[:, :-1].min() >= workloads.FIRST_TOKEN and ids.max() < VOCAB
        mask = batch["inputs_mask"]  # no padding: every source position is real
        assert mask.shape == batch["inputs"].shape and mask.dtype == bool and mask.all()


def test_alternate_warms_up_then_interleaves_rounds():
    calls = []
    systems = [
        System("W", name, lambda name=name: calls.append(name), work_per_call=1.0)
        for name in ("a", "b")
    ]
    times = alternate(systems, rounds=2, per_round=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 2
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    with pytest.raises(ValueError, match="distinct"):
        alternate([systems[0], systems[0]], rounds=1, per_round=1, warmup=0)


def _row(system, metric, value, reference):
    unit = "tokens/s" if metric == "throughput" else "s"
    return report.Row("W", system, metric, value, unit, reference=reference)


def test_ratios_are_against_the_best_reference_in_both_directions():
    rows = report.add_ratios(
        [
            _row("ours", "throughput", 300.0, False),
            _row("peer_a", "throughput", 100.0, True),
            _row("peer_b", "throughput", 200.0, True),
            _row("ours", "compile", 2.0, False),
            _row("unrolled", "compile", 8.0, True),
            _row("ours", "step", 1.0, False),  # no reference reports steps: no ratio
        ]
    )
    assert [r.ratio for r in rows] == [1.5, 0.5, 1.0, 4.0, 1.0, None]


def test_targets_pass_miss_and_skip():
    rows = [
        report.Row("W1", "s2s_jax", "throughput", 120.0, "tokens/s"),
        report.Row("W1", "torch", "throughput", 100.0, "tokens/s", reference=True),
        report.Row("W4 transformer", "s2s_jax scanned", "compile", 1.0, "s"),
        report.Row("W4 transformer", "s2s_jax unrolled", "compile", 4.0, "s", reference=True),
    ]
    results = report.check_targets(rows)
    assert [r["status"] for r in results] == ["PASS", "SKIP", "SKIP", "SKIP", "PASS"]
    assert results[0]["speedup"] == pytest.approx(1.2) and results[4]["speedup"] == 4.0
    rows[1] = report.Row("W1", "torch", "throughput", 110.0, "tokens/s", reference=True)
    assert report.check_targets(rows)[0]["status"] == "MISS"  # 1.09x < 1.15x
    assert report.format_targets(results).splitlines()[0].startswith("PASS        1.20x  W1:")


def test_missing_peer_is_skipped_with_one_message(monkeypatch, capsys):
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    ctx = compare.Context(True, 1, 1, 0, False, 1e9, "/unused")
    assert not ctx.peer_ok("ct2") and not ctx.peer_ok("ct2")
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["Skipping peer ct2: torch, transformers, ctranslate2 not installed "
                   "(pip install 's2s_jax[bench]' to compare against it)."]  # fmt: skip
    assert ctx.skipped == out


@pytest.mark.parametrize("tiny", [True, False])
def test_torch_peer_has_the_parameter_count_of_w1(tiny):
    torch_lstm = pytest.importorskip("benchmarks.peers.torch_lstm")
    config, vocab = workloads.w1_config(tiny), workloads.sizes(tiny).vocab
    peer = torch_lstm.build_model(config.model, vocab)
    assert torch_lstm.trainable_params(peer) == s2s_side.count_params(config, vocab)


def test_torch_peer_computes_the_same_logits_as_s2s_jax():
    torch = pytest.importorskip("torch")
    from benchmarks.peers import torch_lstm

    config = workloads.w1_config(tiny=True)
    batch = workloads.synthetic_batches(
        batch=2, src_len=6, tgt_len=5, vocab=VOCAB, count=1, seed=1
    )[0]  # fmt: skip
    decoder_inputs = np.concatenate([np.ones((2, 1), np.int32), batch["targets"][:, :-1]], 1)
    model, _ = build_model(config.model, VOCAB, VOCAB)
    args = (batch["inputs"], decoder_inputs)
    kw = dict(inputs_mask=batch["inputs_mask"], train=False)
    variables = jax.jit(functools.partial(model.init, **kw))(jax.random.key(3), *args)
    params = jax.tree.map(np.asarray, nn.meta.unbox(variables)["params"])
    expected = jax.jit(functools.partial(model.apply, **kw))({"params": params}, *args)
    peer = torch_lstm.build_model(config.model, VOCAB).eval()
    torch_lstm.load_s2s_params(peer, params)
    with torch.no_grad():
        got = peer(
            torch.from_numpy(batch["inputs"]).long(), torch.from_numpy(decoder_inputs).long()
        )
    # float32 on both sides, different op orders over hidden size 32: ~1e-6 apart.
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), atol=2e-5, rtol=2e-5)


def test_unrolled_time_scans_compute_the_scanned_logits():
    config = workloads.w1_config(tiny=True)
    batch = workloads.synthetic_batches(
        batch=2, src_len=8, tgt_len=5, vocab=VOCAB, count=1, seed=2
    )[0]  # fmt: skip
    args = (batch["inputs"], batch["targets"])
    kw = dict(inputs_mask=batch["inputs_mask"], train=False)
    scanned, _ = build_model(config.model, VOCAB, VOCAB)
    params = scanned.init(jax.random.key(0), *args, **kw)
    want = jax.jit(lambda p: scanned.apply(p, *args, **kw))(params)
    # 3 leaves remainders of both scans (8 source, 5 target steps); 8 unrolls both entirely.
    for unroll in (3, 8):
        unrolled_config = s2s_side.with_model(config, unroll=unroll)
        assert unrolled_config.model.encoder.unroll == unrolled_config.model.decoder.unroll
        unrolled, resolved = build_model(unrolled_config.model, VOCAB, VOCAB)
        assert resolved.encoder.unroll == resolved.decoder.unroll == unroll
        init = functools.partial(unrolled.init, **kw)
        shapes = jax.eval_shape(init, jax.random.key(0), *args)
        assert jax.tree.structure(shapes) == jax.tree.structure(params)
        got = jax.jit(lambda p, m=unrolled: m.apply(p, *args, **kw))(params)
        # Same operations in the same order, only the loop structure differs: float32 rounding.
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_w2_experiment_matches_the_marian_peer_config():
    pytest.importorskip("transformers")
    from s2s_jax.models.marian import marian_to_config

    hf_marian = pytest.importorskip("benchmarks.peers.hf_marian")
    config = workloads.w2_config(tiny=False)
    bridged = marian_to_config(hf_marian.marian_config(config.model, 64))
    ours = build_model(config.model, 64, 64)[1]
    pair_fields = ("encoder_type", "decoder_type", "share_embeddings")
    assert {f: getattr(ours, f) for f in pair_fields} == {
        f: getattr(bridged, f) for f in pair_fields
    }
    same = ("vocab_size", "d_model", "num_heads", "mlp_dim", "num_layers", "activation",
            "pre_norm", "position", "max_position", "scale_embeddings", "dropout",
            "attention_dropout", "activation_dropout")  # fmt: skip
    for side, extra in (("encoder", ("input",)), ("decoder", ("tie_output",))):
        mine, theirs = getattr(ours, side), getattr(bridged, side)
        assert {f: getattr(mine, f) for f in same + extra} == {
            f: getattr(theirs, f) for f in same + extra
        }, side
    assert ours.encoder.pre_norm is False and ours.decoder.activation == "relu"
    assert ours.share_embeddings and ours.decoder.tie_output


def test_with_model_sets_keys_per_part_or_on_both():
    config = workloads.w2_config(tiny=True)
    both = s2s_side.with_model(config, num_layers=5, scan_layers=False)
    assert both.model.encoder.num_layers == both.model.decoder.num_layers == 5
    assert both.model.encoder.scan_layers is both.model.decoder.scan_layers is False
    one = s2s_side.with_model(config, decoder={"num_layers": 4})
    assert (one.model.encoder.num_layers, one.model.decoder.num_layers) == (2, 4)
    assert config.model.decoder.num_layers == 2  # the original is left alone
    with pytest.raises(ConfigError, match="has no key 'encoder_layers'"):
        s2s_side.with_model(config, encoder_layers=12)  # a flat key from before the parts
    with pytest.raises(ConfigError, match="model.encoder of type 'transformer' has no key 'tie"):
        s2s_side.with_model(config, encoder={"tie_output": False})


@pytest.fixture(scope="module")
def w3_tiny():
    """A tiny Marian model with spread-out weights (so tokens depend on the source), its
    s2s_jax twin, and sources."""
    torch = pytest.importorskip("torch")
    hf_marian = pytest.importorskip("benchmarks.peers.hf_marian")
    from s2s_jax.models.marian import from_marian

    hf_model = hf_marian.build_model(workloads.w2_config(tiny=True).model, VOCAB, seed=5).eval()
    with torch.no_grad():  # the default std 0.02 makes every row decode the same tokens
        for name, p in hf_model.named_parameters():
            if name.endswith("weight") and p.ndim == 2 and "embed_positions" not in name:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    config, params = from_marian(hf_model)
    batch = workloads.synthetic_batches(
        batch=3, src_len=6, tgt_len=1, vocab=VOCAB, count=1, seed=4
    )[0]  # fmt: skip
    return hf_model, pair(config), params, batch["inputs"], batch["inputs_mask"]


@pytest.mark.parametrize("beam", [1, 4])
def test_w3_systems_decode_the_same_tokens_from_the_same_weights(w3_tiny, beam, tmp_path):
    ct2 = pytest.importorskip("benchmarks.peers.ct2")
    from benchmarks.peers import hf_marian

    hf_model, model, params, inputs, inputs_mask = w3_tiny
    length = 7
    ours = s2s_side.fixed_length_generate(model, beam_size=beam, length=length, alpha=0.6)
    result = ours(params, inputs, inputs_mask)
    tokens = np.asarray(result.sequences[:, 0])
    assert np.all(np.asarray(result.lengths) == length)  # EOS only where it is forced
    assert np.all(tokens[:, -1] == EOS_ID) and np.all(tokens[:, :-1] != EOS_ID)
    assert len({tuple(row) for row in tokens}) == len(tokens)  # rows depend on their source
    hf_tokens = hf_marian.generate_tokens(hf_model, inputs, beam_size=beam, length=length)
    translator = ct2.translator(ct2.convert(hf_model, tmp_path / "ct2"), "float32")
    ct2_tokens = np.array(
        ct2.translate_ids(translator, ct2.token_strings(VOCAB), inputs, beam_size=beam,
                          length=length)
    )  # fmt: skip
    assert hf_tokens.shape == ct2_tokens.shape == tokens.shape  # the same number of steps
    if beam == 1:
        # Greedy: identical tokens. CTranslate2 forces no EOS at the limit (its last token is
        # free). Beam winners may differ: s2s_jax scores the forced final EOS at its model
        # log-prob, generate at 0 and CTranslate2 not at all, so only greedy is compared.
        np.testing.assert_array_equal(hf_tokens, tokens)
        np.testing.assert_array_equal(ct2_tokens[:, :-1], tokens[:, :-1])


def _run_compare(tmp_path, *extra):
    out_json = tmp_path / "bench.json"
    argv = ["--tiny", "--rounds", "2", "--steps", "1", "--warmup", "0", *extra]
    compare.main([*argv, "--json", str(out_json)])
    saved = json.loads(out_json.read_text())
    rows = {(r["workload"], r["system"], r["metric"]): r for r in saved["rows"]}
    return saved, rows


def test_compare_runs_w1_against_torch_end_to_end(tmp_path, capsys):
    pytest.importorskip("torch")
    saved, rows = _run_compare(tmp_path, "--workloads", "W1")
    assert {("W1", "s2s_jax", m) for m in ("throughput", "compile", "memory")} <= set(rows)
    ours, torch_row = rows["W1", "s2s_jax", "throughput"], rows["W1", "torch", "throughput"]
    assert ours["value"] > 0 and ours["ceiling"] > 0 and "median of 2" in ours["note"]
    assert torch_row["ratio"] == 1.0 and ours["ratio"] == ours["value"] / torch_row["value"]
    assert torch_row["ceiling"] > 0  # credited with s2s_jax's FLOPs per step
    assert saved["targets"][0]["status"] in ("PASS", "MISS") and saved["skipped"] == []
    printed = capsys.readouterr().out
    assert "W1: s2s_jax runs >= 1.15x faster than torch" in printed and "vs best" in printed


def _stub_system(workload, name, *args, **kwargs):
    # Stands in for a compiled s2s_jax system: the orchestration is under test, not XLA.
    return System(workload, name, lambda: None, work_per_call=8.0, flops_per_call=100.0)


def test_compare_skips_missing_peers_and_still_reports(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(compare.s2s_side, "train_system", _stub_system)
    saved, rows = _run_compare(tmp_path, "--workloads", "W1,W2")
    printed = capsys.readouterr().out
    assert "Skipping peer torch: torch not installed" in printed
    assert "Skipping peer hf_marian: torch, transformers not installed" in printed
    assert {(w, s) for w, s, _ in rows} == {("W1", "s2s_jax"), ("W2", "s2s_jax"),
                                            ("W2", "s2s_jax pre-LN")}  # fmt: skip
    assert all(r["ratio"] is None for r in saved["rows"])  # no peer, no ratio
    assert [t["status"] for t in saved["targets"]] == ["SKIP"] * len(report.TARGETS)
    assert len(saved["skipped"]) == 2


def test_peak_rss_child_prints_its_peak_as_json_and_imports_jax_only():
    argv = peak_rss.child_argv("W1", "s2s_jax", tiny=True, steps=2)
    done = subprocess.run(argv, cwd=peak_rss.REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # stdout holds the JSON line and nothing else
    assert (result["workload"], result["system"], result["steps"]) == ("W1", "s2s_jax", 2)
    assert result["peer"] is False and result["tiny"] is True
    assert result["peak_rss_bytes"] > 0
    assert result["frameworks"] == ["jax"]  # no torch, transformers or ctranslate2


def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    # ru_maxrss survives exec, so a child started by subprocess would report this process's
    # peak; the VmHWM figure starts afresh. 512 MiB here, the child needs some 40 MiB.
    ballast = np.ones(512 * 2**20, np.uint8)
    code = (
        "import json; from benchmarks import peak_rss; print(json.dumps(peak_rss.peak_rss_bytes()))"
    )
    child = peak_rss.launch([sys.executable, "-c", code], "probe", timeout=60)
    assert 0 < child < 256 * 2**20 < ballast.nbytes


def test_compare_peak_rss_adds_a_row_per_installed_system(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(compare.RUNNERS, "W1", lambda ctx: [])  # children only, no timing
    saved, rows = _run_compare(tmp_path, "--workloads", "W1", "--peak-rss")
    installed = ["s2s_jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
    got = {system: row for (_, system, metric), row in rows.items() if metric == "peak_rss"}
    assert sorted(got) == sorted(installed)
    for system, row in got.items():
        assert row["workload"] == "W1" and row["unit"] == "MiB" and row["value"] > 0
        assert row["reference"] is (system == "torch") and row["note"].endswith(
            "; build + 1 train step"
        )
    assert "own process (jax)" in got["s2s_jax"]["note"]
    if "torch" in got:  # lower is better: the ratio is torch's MiB over s2s_jax's
        assert "own process (torch)" in got["torch"]["note"]  # the torch child loads no JAX
        assert got["torch"]["ratio"] == 1.0
        assert got["s2s_jax"]["ratio"] == pytest.approx(
            got["torch"]["value"] / got["s2s_jax"]["value"]
        )
    assert saved["peak_rss_source"] == peak_rss.SOURCE and saved["skipped"] == []
    assert peak_rss.SOURCE in capsys.readouterr().out


def test_compare_reports_a_failed_peak_rss_child_and_goes_on(monkeypatch, tmp_path, capsys):
    # The child only knows the real systems: this one makes it exit with a usage error.
    bogus = {"bogus": training_systems.Entry(build=_stub_system)}
    monkeypatch.setitem(training_systems.SYSTEMS, "W1", bogus)
    monkeypatch.setitem(compare.RUNNERS, "W1", lambda ctx: [])
    saved, rows = _run_compare(tmp_path, "--workloads", "W1", "--peak-rss")
    assert rows == {}
    (message,) = saved["skipped"]
    assert message.startswith("Peak RSS child W1/bogus failed with exit code 2; stderr tail:")
    assert "Unknown system 'bogus' for W1; choose from s2s_jax, torch." in message
    assert message in capsys.readouterr().out


def test_peak_rss_rejects_an_unknown_system_by_name():
    with pytest.raises(peak_rss.ChildError, match="W1/nope failed with exit code 2") as err:
        peak_rss.run_child("W1", "nope", tiny=True, steps=1, timeout=60)
    assert "Unknown system 'nope' for W1; choose from s2s_jax, torch." in str(err.value)
    with pytest.raises(ValueError, match="Unknown training workload 'W3'; choose from W1, W2"):
        training_systems.lookup("W3", "s2s_jax")


def test_peak_rss_child_that_hangs_or_prints_no_json_fails_clearly():
    hang = "import sys, time; print('still compiling', file=sys.stderr, flush=True); time.sleep(60)"
    with pytest.raises(peak_rss.ChildError, match="W2/hf_marian timed out after 1 s") as err:
        peak_rss.launch([sys.executable, "-c", hang], "W2/hf_marian", timeout=1)
    assert "still compiling" in str(err.value)
    with pytest.raises(peak_rss.ChildError, match="W1/torch printed no JSON result"):
        peak_rss.launch([sys.executable, "-c", "print('hello')"], "W1/torch", timeout=60)


@pytest.mark.slow  # ~1.5 min: eight tiny compiles and the peers; .ci/run runs the slow tests
def test_device_benchmark_runs_every_section_at_tiny_size(tmp_path, capsys):
    from benchmarks import device

    out = tmp_path / "device.json"
    result = device.main(
        ["--tiny", "--strict", "--rounds", "1", "--steps", "1", "--json", str(out)]
    )
    assert result["errors"] == [] and json.loads(out.read_text())["device"] == result["device"]
    systems = {(r["workload"], r["system"]) for r in result["rows"] if r["metric"] == "throughput"}
    assert {("W2 base bf16", "s2s_jax einsum"), ("W2 base bf16", "s2s_jax xla rbg")} <= systems
    assert {("W1 b256 f32", "s2s_jax scan"), ("W1 b256 f32", "s2s_jax auto")} <= systems
    assert {("W3 beam 4", "s2s_jax"), ("W3 greedy", "s2s_jax")} <= systems
    facts = result["facts"]
    assert facts["ceiling bfloat16"] > 0 and facts["ceiling float32"] > 0
    assert 0 <= facts["parity max relative loss gap"] < 0.02  # bf16 tracks f32 on 3 steps
    assert "parity: largest relative gap" in capsys.readouterr().out


@pytest.mark.slow  # ~25 s: compiles the bucket programs and converts a CTranslate2 model
def test_w6_translates_a_file_with_s2s_jax_and_ct2_running_its_export(tmp_path):
    pytest.importorskip("ctranslate2")
    pytest.importorskip("transformers")
    ctx = compare.Context(True, 1, 1, 0, False, 1e9, str(tmp_path))
    rows = {(r.system, r.metric): r for r in compare.run_w6(ctx)}
    systems = {"s2s_jax", "s2s_jax full batches", "ct2_float32", "ct2_int8"}
    assert {s for s, m in rows if m == "throughput"} == systems
    assert rows["s2s_jax full batches", "compile"].value > 0
    assert rows["ct2_float32", "throughput"].reference
    sizes = compare.W6_SIZES[True]
    read = lambda name: (tmp_path / name).read_text(encoding="utf-8").splitlines()
    ours = read("w6_s2s_jax.txt")
    assert len(ours) == sizes.sentences and {len(line) for line in ours} == {sizes.gen_len - 1}
    assert read("w6_s2s_jax_full.txt") == ours
    # The same exported weights and tokenizer: the same characters, bar the last step, where
    # s2s_jax forces EOS and CTranslate2 picks a token (W3's fixed-length convention).
    assert [line[:-1] for line in read("w6_float32.txt")] == ours
    assert len(read("w6_int8.txt")) == sizes.sentences
