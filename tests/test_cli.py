"""The `s2s` command end to end on a tiny trained workdir."""

import json
import re

import pytest

from s2s_jax.run.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    assert main(["train", "--config", "experiments/reverse_attention.py:tiny",
                 "--workdir", str(path), "--config.train.num_steps=30"]) == 0  # fmt: skip
    return path


def test_train_prints_metrics(workdir, capsys):
    # Already at num_steps: a rerun restores, trains nothing and re-evaluates.
    assert main(["train", "--config", "experiments/reverse_attention.py:tiny",
                 "--workdir", str(workdir), "--config.train.num_steps=30"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) >= {"loss", "token_accuracy", "exact_match"}


@pytest.mark.parametrize("args,tag", [([], "greedy"), (["--beam-size", "2"], "beam2")])
def test_evaluate(workdir, capsys, args, tag):
    assert main(["evaluate", "--workdir", str(workdir), *args]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((workdir / f"evaluate_{tag}.json").read_text())
    assert printed == pytest.approx(saved, abs=1e-6)
    hyps = (workdir / f"evaluate_{tag}.txt").read_text().splitlines()
    assert len(hyps) == 64


def test_decode_file_and_nbest(workdir, tmp_path, capsys):
    source = tmp_path / "src.txt"
    source.write_text("123\n4567\n")
    assert main(["decode", "--workdir", str(workdir), "--input", str(source)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(set(line) <= set("0123456789") for line in lines)
    assert main(["decode", "--workdir", str(workdir), "--input", str(source),
                 "--beam-size", "3", "--nbest", "2"]) == 0  # fmt: skip
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]  # n-best TSV
    assert [row[:2] for row in rows] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"]]


def test_decode_stdin(workdir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("321\n"))
    assert main(["decode", "--workdir", str(workdir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_decode_bad_lines_are_reported_and_keep_alignment(workdir, tmp_path, capsys):
    source = tmp_path / "bad.txt"
    source.write_text("12\n\n12x4\n" + "1" * 40 + "\n")  # an LSTM decodes 40 tokens
    assert main(["decode", "--workdir", str(workdir), "--input", str(source)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4 and out.splitlines()[1:3] == ["", ""]
    assert "line 3: " in err and "'x'" in err and "1 failed (line 3)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["evaluate", "--workdir", "/nonexistent/run"], "does not exist"),
        (["train", "--config", "experiments/reverse_attention.py:tiny",
          "--config.model.encoder.hiden_size=3"], "Did you mean model.encoder.hidden_size"),
        (["train", "--config", "experiments/reverse_attention.py:tiny",
          "--config.model.encoder.attention=bahdanau"], "Did you mean model.decoder.attention"),
        (["train", "--config", "experiments/missing.py"], "not found"),
        (["train", "--config", "experiments/reverse_attention.py:huge"], "Unknown variant"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_restore_into_other_model_config_fails_clearly(workdir, capsys):
    argv = ["train", "--config", "experiments/reverse_attention.py:tiny", "--workdir", str(workdir)]
    argv += ["--config.train.num_steps=30", "--config.model.decoder.hidden_size=48"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.decoder.hidden_size" in err and "32" in err and "48" in err
    # The refused run must not overwrite the workdir's record of the trained config.
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["decoder"]["hidden_size"] == 32


def test_decode_sampling_is_seeded(workdir, tmp_path, capsys):
    source = tmp_path / "src.txt"
    source.write_text("12345\n")
    argv = ["decode", "--workdir", str(workdir), "--input", str(source), "--decode", "sample",
            "--temperature", "1.5", "--seed", "7"]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.strip()


def test_build_data_bible_without_modules_says_what_to_install(tmp_path, capsys):
    argv = ["build-data", "bible", "--data-dir", str(tmp_path / "tfds"),
            "--sword-path", str(tmp_path / "no-sword")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "apt-get install sword-text-sparv sword-text-web" in err and "Traceback" not in err


def test_profile_command(tmp_path, capsys):
    argv = ["profile", "--config", "experiments/bench_w2_transformer.py:tiny", "--workdir",
            str(tmp_path), "--steps", "2", "--warmup", "1"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["flops_per_step"] > 0 and 0 < report["mfu"] < 1
    assert "MFU" in capsys.readouterr().out


def test_bad_host_malloc_setting_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("S2S_JAX_HOST_MALLOC", "fast")
    assert main(["train"]) == 2
    assert "S2S_JAX_HOST_MALLOC='fast' is not one of system, reuse" in capsys.readouterr().err


def test_a_workdir_from_before_composable_models_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"family": "rnn"}}))
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "written before encoders and decoders became separate parts" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--beam-size", "0"], "--beam-size 0: must be >= 1"),
        (["--beam-size", "-1"], "--beam-size -1: must be >= 1"),
        (["--decode", "greedy", "--beam-size", "4"], "greedy keeps one hypothesis"),
        (["--temperature", "0.7"], "--temperature only apply to sampling"),
        (["--decode", "beam", "--top-k", "5"], "--top-k only apply to sampling"),
        (["--alpha", "nan"], "--alpha nan: must be a finite number >= 0"),
        (["--alpha", "-1"], "--alpha -1.0: must be a finite number >= 0"),
        (["--decode", "sample", "--top-p", "1.5"], r"--top-p 1.5: must be in \(0, 1\]"),
        (["--decode", "sample", "--temperature", "-1"], "--temperature -1.0: must be"),
        (["--nbest", "0"], "--nbest 0: must be an integer >= 1"),
    ],
)
def test_decoding_flags_out_of_range_or_ignored_are_refused(tmp_path, capsys, flags, says):
    # Checked before the workdir is read: the missing workdir is never reached. (evaluate has
    # no sampling flags: it says they are unrecognised, also in one line.)
    sampling = {"--temperature", "--top-k", "--top-p", "--nbest"} & set(flags)
    for command in ("decode",) if sampling else ("evaluate", "decode"):
        assert main([command, "--workdir", str(tmp_path / "none"), *flags]) == 2
        err = capsys.readouterr().err
        assert re.search(says, err) and err.count("\n") == 1, err


def test_top_k_beyond_the_vocabulary_is_one_line(workdir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("123\n")
    argv = ["decode", "--workdir", str(workdir), "--input", str(tmp_path / "in.txt")]
    assert main([*argv, "--decode", "sample", "--top-k", "100000"]) == 2
    assert "top_k=100000 exceeds the vocabulary" in capsys.readouterr().err


def test_split_on_a_synthetic_task_is_refused(workdir, capsys):
    assert main(["evaluate", "--workdir", str(workdir), "--split", "test"]) == 2
    assert "has one held-out split; drop --split" in capsys.readouterr().err


def test_a_run_stopped_by_a_signal_exits_75(monkeypatch, tmp_path):
    from s2s_jax.run import train

    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: {})
    argv = ["train", "--config", "experiments/reverse_attention.py:tiny"]
    assert main([*argv, "--workdir", str(tmp_path)]) == 75


@pytest.mark.parametrize("text", ["not json {", "[]", "\xff\xfe"])
def test_a_garbage_workdir_config_names_the_file(tmp_path, capsys, text):
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and err.count("\n") == 1, err


def test_export_is_a_command(tmp_path, capsys):
    # Registered in s2s: its own parser answers (a missing workdir is one line, exit 2).
    argv = ["export", "--workdir", str(tmp_path / "none"), "--to", "hf-marian", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none" in err and err.count("\n") == 1, err
