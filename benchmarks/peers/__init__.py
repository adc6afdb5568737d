"""The peers s2s_jax is measured against, each run only when its packages are installed.

    torch_lstm  W1: the same LSTM encoder-decoder in eager PyTorch (``torch.nn.LSTM``).
    hf_marian   W2 training and W3 ``generate``: Hugging Face ``MarianMTModel``.
    ct2         W3: CTranslate2 on the Hugging Face weights (float32 and int8).

The packages come with the optional extra ``s2s_jax[bench]``. ``missing(peer)`` says what is
absent, so the runner can skip a peer with one line instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import System

REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "hf_marian": ("torch", "transformers"),
    "ct2": ("torch", "transformers", "ctranslate2"),
}


def missing(peer: str) -> list[str]:
    """The packages ``peer`` needs that are not installed (empty: it can run)."""
    if peer not in REQUIREMENTS:
        raise ValueError(f"Unknown peer {peer!r}; valid: {', '.join(REQUIREMENTS)}.")
    return [name for name in REQUIREMENTS[peer] if importlib.util.find_spec(name) is None]


def skip_message(peer: str, absent: list[str]) -> str:
    """The one line printed when a peer is skipped for missing packages."""
    return (
        f"Skipping peer {peer}: {', '.join(absent)} not installed "
        "(pip install 's2s_jax[bench]' to compare against it)."
    )


def torch_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"`` with every CPU thread in use."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(os.cpu_count() or 1)
    return "cpu"


def synchronize(device: str) -> None:
    """Waits for queued GPU work (PyTorch CPU ops are synchronous already)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def torch_training_system(
    workload: str,
    name: str,
    *,
    loss: Callable[[Any, Any], Any],
    optimizer: Any,
    tensors: Sequence[tuple[Any, Any]],
    device: str,
    work_per_call: float,
    note: str,
) -> System:
    """One eager PyTorch update per call: ``loss(src, tgt)``, backward, optimizer step.

    ``tensors`` are ``(src, tgt)`` pairs on ``device``, cycled call after call.
    """
    calls = [0]

    def run_once() -> None:
        src, tgt = tensors[calls[0] % len(tensors)]
        calls[0] += 1
        loss(src, tgt).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    return System(
        workload=workload,
        name=name,
        run_once=run_once,
        work_per_call=work_per_call,
        peer=True,
        note=note,
    )
