"""The one table mapping the models' logical axis names to mesh axes.

Modelled on T5X's ``standard_logical_axis_rules``. Rules are tried in order and a mesh axis is
used at most once per array, so an array whose names compete for an axis keeps the first match:
an activation ``("batch", "length", "embed")`` puts the batch on ("data", "fsdp") and leaves
"embed" unsharded, while a kernel ``("embed", "mlp")`` is sharded over "fsdp" and "tensor".
"""

from __future__ import annotations

from s2s_jax.parallel.mesh import DATA, FSDP, TENSOR

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

LOGICAL_AXIS_RULES: LogicalRules = (
    ("batch", (DATA, FSDP)),  # FSDP shards activations by batch too (ZeRO-3 style)
    ("vocab", TENSOR),
    ("mlp", TENSOR),  # RNN gates and Transformer MLP hidden units
    ("heads", TENSOR),
    ("hidden", TENSOR),  # RNN state, used when a kernel has no "mlp"/"vocab" axis
    ("embed", FSDP),
    ("kv", None),
    ("length", None),
    ("layers", None),  # scanned layer stacks stay whole on every device
)

BATCH_AXES: tuple[str, ...] = (DATA, FSDP)  # the mesh axes a batch's rows are split over
