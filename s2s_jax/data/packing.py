"""Sequence packing: several (source, target) examples per fixed-length row, T5/Flax-WMT style.

A packed batch holds, for each side ("inputs" and "targets"), ``[rows, length]`` int32 arrays:

    inputs / targets                 token ids, PAD_ID (0) after the last segment
    inputs_segmentation / targets_*  1, 2, 3, ... per example in the row, 0 on padding
    inputs_position / targets_*      0, 1, 2, ... restarting at each segment, 0 on padding

and ``inputs_mask``, ``[rows, length]`` bool: ``inputs_segmentation > 0``, as every batch has.
Packing takes token-id sources only (float frames are bucketed, see `data.batching`).

Example k of a row occupies segment k on both sides, so its source and target stay paired and
an example is never split across rows. Attention must not cross segments (model side) and the
decoder input restarts with BOS at every segment (`shift_right_packed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data.types import Batch, EncodedExample
from s2s_jax.data.vocab import BOS_ID, PAD_ID

SIDES = ("inputs", "targets")
PACKED_KEYS = (
    "inputs",
    "inputs_mask",
    "targets",
    "inputs_segmentation",
    "targets_segmentation",
    "inputs_position",
    "targets_position",
)


def _lengths(length: int | Sequence[int]) -> tuple[int, int]:
    """(input row length, target row length) from one int or a pair."""
    pair = (length, length) if isinstance(length, (int, np.integer)) else tuple(length)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(
            f"Packing length must be a positive int or (inputs, targets) pair, got {length!r}."
        )
    return int(pair[0]), int(pair[1])


def pack_examples(examples: Sequence[EncodedExample], length: int | Sequence[int]) -> Batch:
    """Packs examples first-fit into as few rows as that gives, keeping their order per row.

    Each example goes into the first row where both its source and its target still fit, or
    starts a new row. Rows keep segments in example order.

    Args:
      examples: `([src_len], [tgt_len])` int32 pairs (EOS included, see `encode_examples`).
      length: row length for both sides, or an `(inputs, targets)` pair.

    Returns:
      The packed arrays (see the module docstring), each `[rows, length]`.

    Raises:
      ValueError: if an example is empty, longer than its row, or has a float-frame source.
    """
    src_len, tgt_len = _lengths(length)
    capacity = np.array([src_len, tgt_len])
    used = np.zeros((0, 2), dtype=np.int64)  # [rows, side] tokens placed so far
    placement = []  # (row, start offsets) per example
    for i, (source, target) in enumerate(examples):
        if source.ndim != 1:
            raise ValueError(
                f"Example {i} has a source of shape {source.shape}: packing takes token ids "
                "[length] only; bucket float frames instead (data.batching)."
            )
        sizes = np.array([len(source), len(target)])
        if sizes.min() < 1 or np.any(sizes > capacity):
            raise ValueError(
                f"Example {i} has (source, target) lengths {tuple(sizes.tolist())}; each must be "
                f"between 1 and the row lengths {(src_len, tgt_len)}. Filter long examples first."
            )
        fits = np.flatnonzero(np.all(used + sizes <= capacity, axis=1))
        row = int(fits[0]) if fits.size else len(used)
        if row == len(used):
            used = np.concatenate([used, np.zeros((1, 2), dtype=np.int64)])
        placement.append((row, used[row].copy()))
        used[row] += sizes
    return _fill(examples, placement, len(used), (src_len, tgt_len))


def _fill(
    examples: Sequence[EncodedExample],
    placement: list[tuple[int, np.ndarray]],
    rows: int,
    lengths: tuple[int, int],
) -> Batch:
    batch = {}
    for side, n in zip(SIDES, lengths, strict=True):
        batch[side] = np.full((rows, n), PAD_ID, dtype=np.int32)
        batch[f"{side}_segmentation"] = np.zeros((rows, n), dtype=np.int32)
        batch[f"{side}_position"] = np.zeros((rows, n), dtype=np.int32)
    segments = np.zeros(rows, dtype=np.int32)
    for example, (row, starts) in zip(examples, placement, strict=True):
        segments[row] += 1
        for side, tokens, start in zip(SIDES, example, starts, strict=True):
            end = start + len(tokens)
            batch[side][row, start:end] = tokens
            batch[f"{side}_segmentation"][row, start:end] = segments[row]
            batch[f"{side}_position"][row, start:end] = np.arange(len(tokens))
    batch["inputs_mask"] = batch["inputs_segmentation"] > 0
    return batch


def unpack(batch: Batch) -> list[EncodedExample]:
    """Inverts packing: the examples of every row, in (row, segment) order.

    Args:
      batch: packed arrays, each `[rows, length]`.

    Returns:
      `([src_len], [tgt_len])` int32 pairs, one per segment.
    """
    examples = []
    for row in range(batch["inputs"].shape[0]):
        segments = np.unique(batch["inputs_segmentation"][row])
        for segment in segments[segments > 0].tolist():
            pair = tuple(
                batch[side][row][batch[f"{side}_segmentation"][row] == segment] for side in SIDES
            )
            examples.append(pair)
    return examples


def shift_right_packed(
    targets: jax.Array | np.ndarray, segmentation: jax.Array | np.ndarray, bos_id: int = BOS_ID
) -> jax.Array:
    """Decoder inputs for packed targets: each segment starts with BOS, padding stays PAD.

    Unlike a plain shift right, the first token of segment k+1 never sees the last token of
    segment k. On an unpacked batch (segmentation = targets != PAD) it matches the plain shift
    on every non-padding position.

    Args:
      targets: `[batch, length]` int ids.
      segmentation: `[batch, length]` segment ids, 0 on padding.
      bos_id: the id that starts every segment.

    Returns:
      `[batch, length]` decoder inputs, same dtype as `targets` (numpy or jax in, jax out).
    """
    targets = jnp.asarray(targets)
    segmentation = jnp.asarray(segmentation)
    previous_token = jnp.pad(targets, ((0, 0), (1, 0)), constant_values=PAD_ID)[:, :-1]
    previous_segment = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    starts = segmentation != previous_segment
    shifted = jnp.where(starts, jnp.asarray(bos_id, targets.dtype), previous_token)
    return jnp.where(segmentation == 0, jnp.asarray(PAD_ID, targets.dtype), shifted)


def _rename(element: dict[str, np.ndarray]) -> Batch:
    """Renames Grain's ``*_segment_ids`` / ``*_positions`` to ours and adds ``inputs_mask``."""
    out = {}
    for side in SIDES:
        out[side] = element[side]
        out[f"{side}_segmentation"] = element[f"{side}_segment_ids"]
        out[f"{side}_position"] = element[f"{side}_positions"]
    out["inputs_mask"] = out["inputs_segmentation"] > 0
    return out


def pack_dataset(
    dataset: grain.IterDataset, length: int | Sequence[int], num_rows: int
) -> grain.IterDataset:
    """Grain transform: packs a stream of examples into rows, `num_rows` rows at a time.

    Uses Grain's first-fit packer (checkpointable: its iterator state restores exactly): the
    next `num_rows` rows fill up until an example fits in none of them, then all are emitted.

    Args:
      dataset: elements `{"inputs": [src_len], "targets": [tgt_len]}` int32; other keys are
        dropped.
      length: row length for both sides, or an `(inputs, targets)` pair.
      num_rows: rows packed together (e.g. the batch size).

    Returns:
      An `IterDataset` of single packed rows (keys `PACKED_KEYS`, each `[length]`, int32 but
      the bool ``inputs_mask``).
    """
    src_len, tgt_len = _lengths(length)
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}.")
    packed = grain.experimental.FirstFitPackIterDataset(
        dataset,
        length_struct={"inputs": src_len, "targets": tgt_len},
        num_packing_bins=num_rows,
        # The stream is already shuffled; reordering rows would only add work.
        shuffle_bins=False,
    )
    return packed.map(_rename)
