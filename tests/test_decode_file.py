"""`s2s decode` on files and streams: alignment, bad lines, long lines, formats, devices."""

import io
import json
import os
import queue
import threading

import jax
import numpy as np
import pytest

from s2s_jax.config import load_train_config
from s2s_jax.data.vocab import BOS_ID, EOS_ID
from s2s_jax.evaluation.metrics import compute_metrics
from s2s_jax.run import decode_file
from s2s_jax.run.cli import main
from s2s_jax.run.components import build
from s2s_jax.run.decode_file import Options, decode_stream, read_lines
from s2s_jax.run.inference import (
    EncodedLine,
    Hypothesis,
    LineError,
    SourceTooLong,
    Translator,
    evaluate_workdir,
    source_width_limit,
    width_ladder,
)


class Reverser:
    """A stand-in translator: reverses characters; "x" is unknown; 8 characters at most."""

    def __init__(self):
        self.calls = []

    def encode(self, line, *, truncate=False):
        if "x" in line:
            raise LineError("cannot encode 'x'")
        ids = np.array([*map(ord, line), EOS_ID], np.int32)
        if len(line) <= 8:
            return EncodedLine(ids)
        if not truncate:
            raise SourceTooLong(f"{len(line)} tokens, more than the 8 this model takes")
        return EncodedLine(np.append(ids[:8], EOS_ID), truncated_from=len(line))

    def decode(self, sources, *, attention=False):
        self.calls.append([len(s) for s in sources])
        out = []
        for source in sources:
            ids = np.append(source[:-1][::-1], EOS_ID)
            weights = np.eye(len(ids), len(source)) if attention else None
            out.append([Hypothesis("".join(map(chr, ids[:-1])), -1.5, ids, weights)])
        return out

    def pieces(self, ids, side):
        return ["</s>" if i == EOS_ID else chr(i) for i in ids]


def _run(data: bytes, **options):
    out, err = io.StringIO(), io.StringIO()
    summary = decode_stream(Reverser(), io.BytesIO(data), out, Options(**options), err=err)
    return out.getvalue(), err.getvalue(), summary


def test_every_line_gets_one_output_in_input_order():
    data = b"abc\n\nhello\nax\n  \nhi\xffthere\nz\r\nlong line!\nlast"
    out, err, summary = _run(data, window=3)
    assert out.split("\n")[:-1] == ["cba", "", "olleh", "", "", "", "z", "", "tsal"]
    assert "line 4: cannot encode 'x'; empty output" in err
    assert "line 6: not UTF-8 (byte 0xff at byte 3 of the line)" in err
    assert "line 8: 10 tokens, more than the 8" in err and "--too-long truncate" in err
    assert (summary.lines, summary.decoded, summary.empty) == (9, 4, 2)
    assert summary.failed == [4, 6, 8]
    assert "9 lines" in err.splitlines()[-1] and "3 failed (line 4, 6, 8)" in err


def test_truncate_decodes_the_first_tokens_with_a_warning():
    out, err, summary = _run(b"0123456789\n", too_long="truncate")
    assert out == "76543210\n" and not summary.failed and summary.truncated == 1
    assert "line 1: warning: 10 tokens" in err and "decoded its first 8" in err


def test_a_window_is_decoded_shortest_first():
    translator = Reverser()
    decode_stream(translator, io.BytesIO(b"aaaa\nb\ncc\n"), io.StringIO(), err=io.StringIO())
    assert translator.calls == [sorted(translator.calls[0])] and sum(translator.calls, []) != []


def test_a_pipe_gets_each_result_before_the_input_ends():
    read_end, write_end = os.pipe()
    written: queue.Queue = queue.Queue()

    class Out:
        def write(self, text):
            written.put(text)

        def flush(self):
            pass

    source = os.fdopen(read_end, "rb")
    err = io.StringIO()
    thread = threading.Thread(target=decode_stream, args=(Reverser(), source, Out(), Options()),
                              kwargs={"err": err})  # fmt: skip
    thread.start()
    try:
        for line, expected in ((b"abc\n", "cba\n"), (b"de\n", "ed\n")):
            os.write(write_end, line)
            assert written.get(timeout=30) == expected  # the input is still open
    finally:
        os.close(write_end)
        thread.join(timeout=30)
    assert not thread.is_alive() and "2 lines" in err.getvalue()


def test_nbest_and_jsonl_formats():
    out, _, _ = _run(b"ab\n\nax\n", format="nbest")
    assert out == "1\t1\t-1.5000\tba\n"  # rows for decoded hypotheses only
    out, _, _ = _run(b"ab\n\nax\n", format="jsonl", attention=True)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["source_tokens"] == ["a", "b", "</s>"]
    (hyp,) = records[0]["hypotheses"]
    assert hyp["text"] == "ba" and hyp["tokens"] == 2 and hyp["target_tokens"] == ["b", "a", "</s>"]
    assert np.array(hyp["attention"]).shape == (3, 3)
    assert records[1]["hypotheses"] == [] and "error" not in records[1]
    assert records[2]["error"] == "cannot encode 'x'" and records[2]["hypotheses"] == []


def test_read_lines_handles_crlf_bom_and_a_missing_last_newline():
    lines = list(read_lines(io.BytesIO("\ufeffé\r\nb\n\nc".encode())))
    assert [(n.number, n.text, n.error) for n in lines] == [
        (1, "é", None), (2, "b", None), (3, "", None), (4, "c", None)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "options,words",
    [
        ({"format": "xml"}, "unknown --format 'xml'"),
        ({"format": "text", "attention": True}, "--attention needs --format jsonl"),
        ({"window": 0}, "--window must be >= 1"),
    ],
)
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(ValueError, match=words):
        Options(**options)


def test_widths_and_position_limits():
    assert [width_ladder((4, 8), None, n) for n in (3, 8, 9, 17, 40)] == [4, 8, 16, 32, 64]
    assert width_ladder((4, 8), 12, 11) == 12
    config = load_train_config("experiments/reverse_transformer.py:tiny", [])
    c = build(config)  # sinusoidal tables of 256 rows; decoding a width w runs 1.5 w + 5 steps
    assert source_width_limit(c.model_config, c.decode_config)[0] == 167
    rnn = build(load_train_config("experiments/reverse_attention.py:tiny", []))
    assert source_width_limit(rnn.model_config, rnn.decode_config) == (None, "")


# --- real models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    # One step, and training's own evaluation on one example: fewer programs to compile.
    assert main(["train", "--config", "experiments/reverse_attention.py:tiny",
                 "--workdir", str(path), "--config.train.num_steps=1",
                 "--config.eval.max_examples=1",
                 "--config.eval.metrics=exact_match,bleu"]) == 0  # fmt: skip
    return path


@pytest.fixture(scope="module")
def rnn(workdir):
    """The trained LSTM on all eight simulated devices, greedy."""
    return Translator(workdir)


@pytest.fixture(scope="module")
def transformer():
    """An untrained tiny Transformer whose encoder takes 12 positions (11 tokens + EOS)."""
    config = load_train_config(
        "experiments/reverse_transformer.py:tiny", ["--config.model.encoder.max_position=12"]
    )
    c = build(config)
    return Translator.from_components(c, c.init_state().params)


def test_decoding_a_file_with_blank_lines_scores_as_evaluate(workdir, rnn, tmp_path, capsys):
    result = evaluate_workdir(workdir)  # the whole split, on one device
    examples = build(load_train_config("experiments/reverse_attention.py:tiny", [])).data
    sources = [e["inputs"] for e in examples.eval_examples]
    references = [e["targets"] for e in examples.eval_examples]
    lines = []
    for i, source in enumerate(sources):
        lines += [source] + [""] * (i % 3 == 0)  # a blank line after every third source
    src, dst = tmp_path / "src.txt", tmp_path / "out.txt"
    src.write_text("\n".join(lines) + "\n")
    source, out = decode_file.open_input(str(src)), decode_file.open_output(str(dst))
    with source, out:
        assert not decode_stream(rnn, source, out).failed
    outputs = dst.read_text().split("\n")[:-1]
    assert len(outputs) == len(lines)
    assert all(text == "" for text, line in zip(outputs, lines, strict=True) if not line)
    hypotheses = [text for text, line in zip(outputs, lines, strict=True) if line]
    assert hypotheses == result.hypotheses
    lengths = [len(s) for s in sources]
    scores, _ = compute_metrics(("exact_match", "bleu"), hypotheses, references, lengths)
    assert scores == {k: result.metrics[k] for k in ("exact_match", "bleu")}
    assert f"{len(lines)} lines" in capsys.readouterr().err


def test_eight_devices_decode_like_one(workdir):
    overrides = {"method": "beam", "beam_size": 2, "nbest": 2}
    eight = Translator(workdir, **overrides)
    one = Translator(workdir, devices=jax.devices()[:1], **overrides)
    assert (eight.mesh.size, one.mesh.size) == (8, 1)
    sources = [eight.encode(line).ids for line in ("12345", "987654", "4444444")]  # 1 width
    for mine, theirs in zip(
        eight.decode(sources, attention=True), one.decode(sources, attention=True), strict=True
    ):
        assert [h.text for h in mine] == [h.text for h in theirs] and len(mine) == 2
        # float32 sums over other per-device batch shapes: rounding-level differences only
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in theirs], atol=1e-5)
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_attention_has_a_row_per_target_token(family, rnn, transformer):
    translator = rnn if family == "rnn" else transformer
    out, err = io.StringIO(), io.StringIO()
    options = Options(format="jsonl", attention=True)
    decode_stream(translator, io.BytesIO(b"1234\n\n567890\n"), out, options, err=err)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 3 and records[1]["hypotheses"] == []
    for record in (records[0], records[2]):
        (hyp,) = record["hypotheses"]
        weights = np.array(hyp["attention"])
        assert weights.shape == (len(hyp["target_tokens"]), len(record["source_tokens"]))
        assert record["source_tokens"][-1] == "</s>" and hyp["tokens"] <= len(weights)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)  # 5-decimal rounding


def test_attention_is_the_decoders_own_for_the_chosen_tokens(rnn):
    source = rnn.encode("1234").ids
    (hyp,) = rnn.decode([source], attention=True)[0]
    model, variables = rnn.components.model, {"params": rnn.params}
    encoded = model.apply(
        variables, source[None], np.ones((1, len(source)), bool), train=False, method=model.encode
    )
    prefix = np.array([[BOS_ID, *hyp.ids[:-1]]], np.int32)  # row t: the step choosing token t
    logits, weights = model.apply(
        variables, encoded, prefix, train=False, return_attention=True, method=model.decode
    )
    # greedy's own choices (the last token may be the EOS that the length budget forces)
    np.testing.assert_array_equal(np.argmax(logits[0, :-1], axis=-1), hyp.ids[:-1])
    np.testing.assert_allclose(weights[0], hyp.attention, atol=1e-5)  # other padding: rounding


def test_lines_past_the_buckets_use_an_extra_width(rnn, transformer):
    assert rnn.buckets == (4, 8) and rnn.max_source_length is None  # an RNN takes any length
    (hyp,) = rnn.decode([rnn.encode("7" * 30).ids])[0]
    assert len(hyp.ids) > 8  # decoded at width 32 with its own budget
    assert transformer.max_source_length == 11
    out, err = io.StringIO(), io.StringIO()
    data = b"12345\n" + b"1" * 10 + b"\n" + b"2" * 20 + b"\n"
    options = Options(format="jsonl", attention=True)  # the programs the test above compiled
    summary = decode_stream(transformer, io.BytesIO(data), out, options, err=err)
    assert summary.failed == [3] and summary.decoded == 2 and len(out.getvalue().splitlines()) == 3
    assert "line 3: 20 tokens, more than the 11 this model takes (encoder max_position=12)" in (
        err.getvalue()
    )
    options = Options(format="jsonl", attention=True, too_long="truncate")
    summary = decode_stream(transformer, io.BytesIO(data), io.StringIO(), options, err=err)
    assert not summary.failed and summary.truncated == 1


def test_cli_bad_lines_keep_alignment_and_set_the_exit_status(workdir, tmp_path, capsys):
    source = tmp_path / "bad.txt"
    source.write_bytes(b"12\n\n12x4\n\xff\xfe\n321\n")
    assert main(["decode", "--workdir", str(workdir), "--input", str(source)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.split("\n")
    assert len(lines) == 6 and lines[1:4] == ["", "", ""] and lines[0] and lines[4]
    assert "line 3: Cannot encode characters ['x']" in captured.err
    assert "line 4: not UTF-8" in captured.err and "2 failed (line 3, 4)" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--input", "/nonexistent/src.txt"], "--input /nonexistent/src.txt does not exist"),
        (["--input", "/"], "is a directory"),
        (["--format", "xml"], "unknown --format 'xml'"),
        (["--attention"], "--attention needs --format jsonl"),
        (["--output", "/"], "cannot write --output /"),
    ],
)
def test_cli_bad_arguments_are_one_line(workdir, extra, words, capsys):
    assert main(["decode", "--workdir", str(workdir), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_cli_workdir_without_checkpoint_is_one_line(workdir, tmp_path, capsys, monkeypatch):
    (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    assert main(["decode", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint" in err.lower() and len(err.splitlines()) == 1, err
