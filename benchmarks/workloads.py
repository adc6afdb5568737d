"""Sizes and synthetic data of the workloads in /work/shared/bench/WORKLOADS.md.

The model and training settings come from the experiment files (``experiments/bench_w1_lstm.py``
and ``experiments/bench_w2_transformer.py``), so the benchmark measures exactly what ``s2s
profile`` and ``s2s train`` run; the peers are built from the same config sections. ``--tiny``
uses the experiments' ``tiny`` variants and the small sizes below (seconds on a CPU).

This module does not import JAX: a PyTorch or Hugging Face peer measured in a process of its
own (``peak_rss.py``) reads its sizes from here (see ``load_config``).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from s2s_jax.data.vocab import EOS_ID, UNK_ID

W1_EXPERIMENT = "experiments/bench_w1_lstm.py"
W2_EXPERIMENT = "experiments/bench_w2_transformer.py"
FIRST_TOKEN = UNK_ID + 1  # synthetic ids avoid PAD, BOS, EOS and UNK
DATA_SEED = 0xBE4C


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Workload sizes not fixed by the experiment files.

    Attributes:
      vocab: source = target vocabulary (W1: two tables; W2/W3: one shared table).
      decode_batch: W3 source sentences per decode.
      decode_src_len: W3 source length (EOS included).
      gen_len: W3 generated tokens per sentence (EOS suppressed until then).
      beam: W3 beam size (greedy is also measured).
      long_src_len: W4 source length of the W1 model.
      deep_layers: W4 encoder and decoder depth of the W2 model.
      partial_unroll: W4 time steps per loop iteration of the partially unrolled LSTM.
    """

    vocab: int
    decode_batch: int
    decode_src_len: int
    gen_len: int
    beam: int
    long_src_len: int
    deep_layers: int
    partial_unroll: int


FULL = Sizes(
    vocab=8000, decode_batch=16, decode_src_len=32, gen_len=32, beam=4,
    long_src_len=512, deep_layers=12, partial_unroll=8,
)  # fmt: skip
TINY = Sizes(
    vocab=64, decode_batch=2, decode_src_len=8, gen_len=8, beam=4,
    long_src_len=32, deep_layers=3, partial_unroll=4,
)  # fmt: skip


def sizes(tiny: bool) -> Sizes:
    """The tiny or the full sizes."""
    return TINY if tiny else FULL


def load_config(experiment: str, variant: str = "") -> ml_collections.ConfigDict:
    """``get_config(variant)`` of an experiment file, locked.

    Loading a config never imports JAX (``s2s_jax.config`` and the part configs are JAX-free),
    so a PyTorch or Hugging Face peer measured alone by ``peak_rss.py`` keeps its own imports
    and peak RSS.
    """
    from s2s_jax.config import load_experiment

    return load_experiment(experiment, variant)


def w1_config(tiny: bool) -> ml_collections.ConfigDict:
    """W1's run config: 2+2-layer LSTM, Luong general attention, Adam 1e-3, batch 64 x 32."""
    return load_config(W1_EXPERIMENT, "tiny" if tiny else "")


def w2_config(tiny: bool, pre_ln: bool = False) -> ml_collections.ConfigDict:
    """W2's run config: 3+3-layer Transformer, post-LN as Marian (or pre-LN), AdamW."""
    variant = "_".join(part for part in ("tiny" if tiny else "", "preln" if pre_ln else "") if part)
    return load_config(W2_EXPERIMENT, variant)


def lengths(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``(source length, target length)`` of an experiment's single fixed-length bucket."""
    length = max(config.data.buckets)
    return length, length


def synthetic_batches(
    *, batch: int, src_len: int, tgt_len: int, vocab: int, count: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Random-token batches: ids uniform in ``[FIRST_TOKEN, vocab)``, EOS last, no PAD.

    Args:
      batch: rows per batch.
      src_len: source length (EOS included).
      tgt_len: target length (EOS included).
      vocab: vocabulary size (> FIRST_TOKEN).
      count: how many batches.
      seed: with ``DATA_SEED``, seeds the generator: every system sees the same batches.

    Returns:
      ``count`` dicts ``{"inputs": [batch, src_len], "targets": [batch, tgt_len]}`` int32 with
      ``"inputs_mask"`` ``[batch, src_len]`` bool (all True: no padding), the source mask every
      s2s_jax batch carries.
    """
    if vocab <= FIRST_TOKEN:
        raise ValueError(
            f"Synthetic data needs vocab > {FIRST_TOKEN} (specials first), got {vocab}."
        )
    rng = np.random.default_rng([seed, DATA_SEED])
    out = []
    for _ in range(count):
        batch_arrays = {}
        for key, length in (("inputs", src_len), ("targets", tgt_len)):
            ids = rng.integers(FIRST_TOKEN, vocab, size=(batch, length), dtype=np.int32)
            ids[:, -1] = EOS_ID
            batch_arrays[key] = ids
        batch_arrays["inputs_mask"] = np.ones((batch, src_len), bool)
        out.append(batch_arrays)
    return out


def training_batches(
    config: ml_collections.ConfigDict, vocab: int, *, src_len: int | None = None, count: int = 4
) -> list[dict[str, np.ndarray]]:
    """``synthetic_batches`` of an experiment's batch size and lengths, seeded by its ``seed``.

    Args:
      config: the run config (``data.batch_size``, ``data.buckets``, ``seed``).
      vocab: vocabulary size of the ids.
      src_len: overrides the source length (W4's long sources); None keeps the experiment's.
      count: how many batches (cycled by the train steps).
    """
    source, target = lengths(config)
    return synthetic_batches(
        batch=config.data.batch_size, src_len=src_len or source, tgt_len=target, vocab=vocab,
        count=count, seed=config.seed,
    )  # fmt: skip
