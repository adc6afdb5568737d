"""Using a trained workdir: evaluate its latest checkpoint, or translate new source lines."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from s2s_jax.checkpointing import Checkpointer
from s2s_jax.data.batching import encode_source, eval_batches
from s2s_jax.data.vocab import BOS_ID, EOS_ID, SPECIAL_TOKENS, VocabError
from s2s_jax.decoding.generate import DecodeConfig, decoder, generate
from s2s_jax.evaluation.evaluate import EvalResult, evaluate
from s2s_jax.evaluation.report import format_by_length, write_hypotheses, write_results
from s2s_jax.models.transformer_config import POSITION_TABLE_NAMES
from s2s_jax.parallel import sharding
from s2s_jax.parallel.mesh import MeshConfig, make_mesh
from s2s_jax.run.components import Components, build, load_workdir_config
from s2s_jax.training.losses import shift_right
from s2s_jax.training.step import jit_eval_step

DECODE_BATCH = 32  # rows per decode call, rounded up to a multiple of the devices


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
    if split and config.data.source != "tfds":
        raise ValueError(
            f"--split {split}: this run's data is the synthetic task {config.data.task!r}, which "
            "has one held-out split; drop --split."
        )
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


def position_limit(part_config: Any) -> int | None:
    """Most positions a model part takes: its absolute position table's rows; None: no limit.

    Recurrent parts and relative positions (rope, t5_relative) take any length.
    """
    if getattr(part_config, "position", None) in POSITION_TABLE_NAMES:
        return int(part_config.max_position)
    return None


def source_width_limit(model_config: Any, cfg: DecodeConfig) -> tuple[int | None, str]:
    """The widest padded source (tokens + EOS) a model encodes and decodes from, and why.

    An encoder with a position table takes ``max_position`` source positions; a decoder with
    one takes ``max_position`` target positions, and decoding a source of width ``w`` runs up
    to ``cfg.max_length(w)`` steps. ``(None, "")`` when neither part has a table.
    """
    limits = []
    encoder = position_limit(model_config.encoder)
    if encoder is not None:
        limits.append((encoder, f"encoder max_position={encoder}"))
    target = position_limit(model_config.decoder)
    if target is not None:
        width = 0
        if cfg.max_length_offset <= target:  # else not even an empty source fits
            ratio = max(cfg.max_length_ratio, 1e-9)
            width = int((target - cfg.max_length_offset) / ratio) + 1
            while width > 0 and cfg.max_length(width) > target:
                width -= 1
        budget = f"{cfg.max_length_ratio:g} x source + {cfg.max_length_offset}"
        limits.append((width, f"decoder max_position={target} for {budget} target tokens"))
    return min(limits) if limits else (None, "")


def width_ladder(buckets: Sequence[int], limit: int | None, length: int) -> int:
    """The padded width for a source of ``length`` positions (EOS included).

    The smallest training bucket that holds it; past the largest, that bucket doubled until it
    does (evaluation likewise widens its buckets to its longest example), so a stream compiles
    one more program per doubling; never wider than ``limit`` (callers check ``length``).
    """
    for width in buckets:
        if width >= length:
            return width
    width = buckets[-1]
    while width < length:
        width *= 2
    return width if limit is None else min(width, limit)


class LineError(ValueError):
    """One source line cannot be decoded (unknown characters, too long); the rest can."""


class SourceTooLong(LineError):
    """A source line has more tokens than the model's positions allow."""


@dataclasses.dataclass(frozen=True)
class EncodedLine:
    """A source line as the model reads it."""

    ids: np.ndarray  # [length + 1] int32, EOS last
    truncated_from: int = 0  # tokens before truncation; 0: not truncated


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """One decoded hypothesis of a source line."""

    text: str
    score: float
    ids: np.ndarray  # [generated] int32: the target ids, EOS last when the hypothesis ended
    attention: np.ndarray | None = None  # [generated, source length + 1] cross-attention

    @property
    def tokens(self) -> int:
        """Target tokens of the text (EOS not counted)."""
        return len(self.ids) - int(len(self.ids) > 0 and self.ids[-1] == EOS_ID)


class Translator:
    """Decodes source lines with a trained model, on all local devices (data parallel).

    Each decode call pads a fixed number of rows (``DECODE_BATCH``, rounded up to a multiple of
    the devices) to a width of ``width_ladder``: one compiled program per width. Rows are split
    over the mesh's data axis and the parameters replicated, so 1 and 8 devices decode alike.

    Args:
      workdir: a trained run directory.
      devices: the devices to decode on (default: all local devices).
      **decode_overrides: DecodeConfig fields replacing the run's eval settings (None: keep).
    """

    def __init__(self, workdir: str | Path, *, devices=None, **decode_overrides):
        components, params = load_trained(workdir, **decode_overrides)
        self._setup(components, params, devices)

    @classmethod
    def from_components(cls, components: Components, params: Any, *, devices=None) -> Translator:
        """A translator for parameters already in memory (e.g. a fresh init, in tests)."""
        translator = cls.__new__(cls)
        translator._setup(components, params, devices)
        return translator

    def _setup(self, components: Components, params: Any, devices) -> None:
        self.components, self.params = components, params
        self.mesh = make_mesh(MeshConfig(data=-1), devices or jax.local_devices())
        self.rows = -(-DECODE_BATCH // self.mesh.size) * self.mesh.size
        model, decode_params = components.model.for_decoding(params)
        self._decode_params = jax.device_put(decode_params, sharding.replicated(self.mesh))
        run = functools.partial(_generate_and_attend, model=model, cfg=components.decode_config)
        self._run = jax.jit(
            sharding.in_sharding_context(run, self.mesh),
            static_argnames="attention",
            out_shardings=sharding.replicated(self.mesh),
        )
        self.limit, self.limit_reason = source_width_limit(
            components.model_config, components.decode_config
        )
        buckets = [b for b in components.data.buckets if self.limit is None or b <= self.limit]
        self.buckets = tuple(buckets) or (self.limit,)

    @property
    def max_source_length(self) -> int | None:
        """Most source tokens per line (EOS not counted); None: no limit (RNNs, relative)."""
        return None if self.limit is None else self.limit - 1

    def encode(self, line: str, *, truncate: bool = False) -> EncodedLine:
        """A text line as ids ending with EOS.

        Raises:
          LineError: characters the vocabulary lacks, or more tokens than ``max_source_length``
            (unless ``truncate``: then its first ``max_source_length`` tokens are kept).
          ValueError: if the model reads float frames, not text.
        """
        if self.components.data.src_vocab is None:
            raise ValueError("this model reads float frames, not text lines")
        try:
            ids = encode_source(line, self.components.data.src_vocab)
        except VocabError as e:
            raise LineError(str(e)) from None
        if self.limit is None or len(ids) <= self.limit:
            return EncodedLine(ids)
        tokens, most = len(ids) - 1, self.limit - 1
        if not truncate:
            raise SourceTooLong(
                f"{tokens} tokens, more than the {most} this model takes ({self.limit_reason})"
            )
        return EncodedLine(np.append(ids[:most], EOS_ID).astype(np.int32), truncated_from=tokens)

    def decode(
        self, sources: Sequence[np.ndarray], *, attention: bool = False
    ) -> list[list[Hypothesis]]:
        """Decodes ``[length + 1]`` id sources (``encode``); per source, its n-best (best first).

        With ``attention`` each hypothesis carries its cross-attention (see
        ``_generate_and_attend``).
        """
        if not sources:
            return []
        lengths = sorted({len(s) for s in sources})
        widths = sorted({width_ladder(self.buckets, self.limit, n) for n in lengths})
        dummy_target = np.asarray([EOS_ID], np.int32)
        pairs = [(np.asarray(s, np.int32), dummy_target) for s in sources]
        out: list[list[Hypothesis]] = [[] for _ in sources]
        for batch in eval_batches(pairs, self.rows, widths):
            inputs, mask = sharding.put_global(
                (batch["inputs"], batch["inputs_mask"]), sharding.batch_sharding(self.mesh)
            )
            result, weights = jax.device_get(
                self._run(self._decode_params, inputs, mask, attention=attention)
            )
            for row, index in enumerate(batch["index"].tolist()):
                if index >= 0:
                    source_len = int(batch["inputs_mask"][row].sum())
                    out[index] = self._hypotheses(result, weights, row, source_len)
        return out

    def _hypotheses(self, result, weights, row: int, source_len: int) -> list[Hypothesis]:
        vocab = self.components.data.tgt_vocab
        found = []
        for k, (seq, score, length) in enumerate(
            zip(result.sequences[row], result.scores[row], result.lengths[row], strict=True)
        ):
            if length == 0 and not np.isfinite(score):
                continue  # an n-best slot no hypothesis filled
            ids = np.asarray(seq[:length], np.int32)
            found.append(
                Hypothesis(
                    text=vocab.decode(ids),
                    score=float(score),
                    ids=ids,
                    attention=None if weights is None else weights[row, k, :length, :source_len],
                )
            )
        return found

    def pieces(self, ids: Sequence[int], side: str) -> list[str]:
        """The token strings of ``ids`` on ``side`` ("source" or "target"), specials named."""
        data = self.components.data
        vocab = data.src_vocab if side == "source" else data.tgt_vocab
        to_piece = getattr(vocab, "id_to_piece", None) or (lambda i: vocab.decode([i]))
        return [
            SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else to_piece(i) for i in map(int, ids)
        ]

    def translate(self, lines: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Returns, per line, the n-best ``(text, score)`` list (best first); [] for empty lines.

        Raises:
          ValueError: listing every line that cannot be decoded (unknown characters, too long).
        """
        encoded, problems = {}, []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                encoded[number - 1] = self.encode(line).ids
            except LineError as e:
                problems.append(f"line {number}: {e}")
        if problems:
            raise ValueError("bad input:\n  " + "\n  ".join(problems))
        decoded = dict(zip(encoded, self.decode(list(encoded.values())), strict=True))
        return [[(h.text, h.score) for h in decoded.get(i, [])] for i in range(len(lines))]


def _generate_and_attend(
    params: Any,
    inputs: jax.Array,
    inputs_mask: jax.Array,
    *,
    model: Any,
    cfg: DecodeConfig,
    attention: bool,
) -> tuple[Any, jax.Array | None]:
    """Decodes a batch; with ``attention`` also the cross-attention of every hypothesis.

    The attention comes from one teacher-forced pass of ``model.decode`` over the chosen
    hypotheses (last layer, heads averaged for a Transformer): the weights the decoder computes
    for that prefix, which are those it used while choosing each token, without threading
    per-step weights through the model-agnostic decoding loop.

    Returns:
      (DecodeResult, weights ``[batch, nbest, max_length, src_len]`` float32 or None).
    """
    result = generate(params, inputs, inputs_mask, model=model, cfg=cfg)
    if not attention:
        return result, None
    batch, nbest, length = result.sequences.shape
    variables = {"params": params}
    repeat = functools.partial(jnp.repeat, repeats=nbest, axis=0)  # one row per hypothesis
    encoded = model.apply(
        variables, repeat(inputs), repeat(inputs_mask), train=False, method=model.encode
    )
    decoder_inputs = shift_right(result.sequences.reshape(batch * nbest, length), BOS_ID)
    _, weights = model.apply(
        variables, encoded, decoder_inputs, train=False, return_attention=True,
        method=model.decode,
    )  # fmt: skip
    return result, weights.astype(jnp.float32).reshape(batch, nbest, length, -1)
