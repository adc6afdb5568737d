"""Using a trained workdir: evaluate its latest checkpoint, or translate new source lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.data.batching import encode_examples, eval_batches
from s2s_jax.data.vocab import VocabError
from s2s_jax.decoding.generate import decoder
from s2s_jax.evaluation.evaluate import EvalResult, evaluate
from s2s_jax.evaluation.report import format_by_length, write_hypotheses, write_results
from s2s_jax.run.components import Components, build, load_workdir_config
from s2s_jax.training.step import jit_eval_step

DECODE_BATCH = 32


def _read_workdir(workdir: str | Path) -> tuple[Path, ml_collections.ConfigDict]:
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"Workdir {workdir} does not exist; train into it first.")
    return workdir, load_workdir_config(workdir)


def _restore(
    workdir: Path, config: ml_collections.ConfigDict, split: str | None, decode_overrides: dict
) -> tuple[Components, object]:
    c = build(config, workdir=workdir, eval_split=split, **decode_overrides)
    ckpt = Checkpointer(workdir / "checkpoints", every_steps=1, keep=1, read_only=True)
    with ckpt:
        state, _, _ = ckpt.restore(c.abstract_state(), config=c.checkpoint_config())
    return c, state.params


def load_trained(
    workdir: str | Path, *, split: str | None = None, **decode_overrides
) -> tuple[Components, object]:
    """Rebuilds a run from ``workdir/config.json`` and restores its latest parameters.

    ``split`` (TFDS sources) evaluates another split than the run's ``data.eval_split``.
    """
    workdir, config = _read_workdir(workdir)
    return _restore(workdir, config, split, decode_overrides)


def evaluate_workdir(
    workdir: str | Path,
    *,
    split: str | None = None,
    max_examples: int | None = None,
    **decode_overrides,
) -> EvalResult:
    """Evaluates the latest checkpoint on an eval split; writes evaluate_<tag>.json / .txt.

    The split is ``split`` when given (data with named splits, e.g. TFDS; a synthetic task has
    one held-out split), else the run's own eval split. By default all of it is scored
    (training's periodic evaluation scores its first ``eval.max_examples``); ``max_examples``
    limits it (0: all). The metrics are the run's: ``eval.metrics``, or its data's defaults.
    ``<tag>`` names the decoding (``greedy``, ``beam4``, ``sample``), prefixed by ``split`` when
    one was given (``test_beam4``).
    """
    workdir, config = _read_workdir(workdir)
    max_examples = 0 if max_examples is None else max_examples
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0 (0: the whole split), got {max_examples}.")
    config.eval.max_examples = max_examples
    c, params = _restore(workdir, config, split, decode_overrides)
    result = evaluate(
        params,
        c.data.eval_batches,
        c.data.eval_examples,
        eval_step=jit_eval_step(c.model),
        decode=decoder(c.model, params, c.decode_config),  # decoding layout made once
        tgt_vocab=c.data.tgt_vocab,
        metrics=c.metrics,
    )
    tag = c.decode_config.method + (
        f"{c.decode_config.beam_size}" if c.decode_config.method == "beam" else ""
    )
    if split:
        tag = f"{split}_{tag}"
    write_results(workdir / f"evaluate_{tag}.json", result)
    write_hypotheses(workdir / f"evaluate_{tag}.txt", result.hypotheses)
    if result.by_length:
        print(f"exact match by source length: {format_by_length(result.by_length)}")
    return result


class Translator:
    """Decodes raw source strings with a trained workdir."""

    def __init__(self, workdir: str | Path, **decode_overrides):
        self.components, self.params = load_trained(workdir, **decode_overrides)
        self._decode = decoder(self.components.model, self.params, self.components.decode_config)

    @property
    def max_source_length(self) -> int:
        """Most source tokens per line (its largest length bucket, less one for EOS)."""
        return max(self.components.data.buckets) - 1

    def validate(self, lines: Sequence[str]) -> None:
        """Raises ValueError listing every bad line (empty, unknown characters, too long)."""
        vocab = self.components.data.src_vocab
        if vocab is None:
            raise ValueError("bad input: this model reads float frames, not text lines")
        problems = [] if lines else ["no input lines"]
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                problems.append(f"line {number}: empty input")
                continue
            try:
                length = len(vocab.encode(line))
            except VocabError as e:
                problems.append(f"line {number}: {e}")
                continue
            if length > self.max_source_length:
                problems.append(
                    f"line {number}: {length} tokens, the model takes at most "
                    f"{self.max_source_length} (its largest length bucket)"
                )
        if problems:
            raise ValueError("bad input:\n  " + "\n  ".join(problems))

    def translate(self, lines: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Returns, per line, the n-best ``(text, score)`` list (best first)."""
        self.validate(lines)
        c = self.components
        examples = [{"inputs": line, "targets": ""} for line in lines]
        encoded = encode_examples(examples, c.data.src_vocab, c.data.tgt_vocab)
        out: list[list[tuple[str, float]]] = [[] for _ in lines]
        for batch in eval_batches(encoded, DECODE_BATCH, c.data.buckets):
            result = self._decode(batch["inputs"], batch["inputs_mask"])
            sequences, scores = np.asarray(result.sequences), np.asarray(result.scores)
            for row, index in enumerate(np.asarray(batch["index"])):
                if index >= 0:
                    out[index] = [
                        (c.data.tgt_vocab.decode(seq), float(score))
                        for seq, score in zip(sequences[row], scores[row], strict=True)
                    ]
        return out
