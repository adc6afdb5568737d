"""W2 and W3 peer: Hugging Face ``MarianMTModel`` on PyTorch.

The model comes from ``s2s_jax.models.marian_config.marian_test_config`` with the sizes of the W2
``model`` config section: post-LN (Marian's only layout), ReLU, one shared and tied vocabulary,
sinusoidal positions, s2s_jax's special ids (pad 0, decoder start 1, eos 2). Training is the
usual loop (``labels=`` gives HF's mean cross-entropy, AdamW); decoding is ``generate``.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import torch
import transformers

from benchmarks.harness import System
from benchmarks.peers import synchronize, torch_device, torch_training_system
from s2s_jax.data.vocab import PAD_ID
from s2s_jax.models.marian_config import marian_test_config

# Keys of model.encoder / model.decoder that marian_test_config takes one value of for both.
_SHARED_KEYS = ("d_model", "num_layers", "num_heads", "mlp_dim", "max_position", "dropout",
                "activation")  # fmt: skip


def marian_config(model: ml_collections.ConfigDict, vocab: int) -> transformers.MarianConfig:
    """The ``MarianConfig`` of a W2 ``model`` config section (``marian_test_config``).

    The section must pair a "transformer" encoder with a "transformer" decoder whose shared
    sizes (``_SHARED_KEYS``) are equal.
    """
    types = (model.encoder.type, model.decoder.type)
    if types != ("transformer", "transformer"):
        raise ValueError(
            f"The Marian peer mirrors a Transformer encoder and decoder; got {types[0]!r} and "
            f"{types[1]!r}."
        )
    differ = [
        f"{key} ({model.encoder[key]} vs {model.decoder[key]})"
        for key in _SHARED_KEYS
        if model.encoder[key] != model.decoder[key]
    ]
    if differ:
        raise ValueError(
            "marian_test_config builds one value of each size for both stacks; the encoder and "
            f"decoder differ in {', '.join(differ)}."
        )
    enc = model.encoder
    return marian_test_config(
        vocab_size=vocab, d_model=enc.d_model, layers=enc.num_layers, heads=enc.num_heads,
        ffn=enc.mlp_dim, max_len=enc.max_position, dropout=enc.dropout,
        activation=enc.activation,
    )  # fmt: skip


def build_model(
    model: ml_collections.ConfigDict, vocab: int, seed: int = 0
) -> transformers.MarianMTModel:
    """A randomly initialised ``MarianMTModel`` of a W2 ``model`` config section (train mode)."""
    transformers.logging.set_verbosity_error()
    hf_config = marian_config(model, vocab)
    torch.manual_seed(seed)
    return transformers.MarianMTModel(hf_config)


def _tensors(batch: dict[str, np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(batch[k]).long().to(device) for k in ("inputs", "targets"))


def train_system(
    workload: str,
    config: ml_collections.ConfigDict,
    vocab: int,
    batches: list[dict[str, np.ndarray]],
) -> System:
    """One eager AdamW step of a fresh Marian model per call (dropout on), as a System."""
    device = torch_device()
    model = build_model(config.model, vocab, config.seed).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    tensors = [_tensors(b, device) for b in batches]

    def loss(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        # labels -> decoder inputs [decoder start, labels[:-1]] and the mean token CE.
        return model(input_ids=src, attention_mask=src != PAD_ID, labels=tgt).loss

    return torch_training_system(
        workload, "hf_marian", loss=loss, optimizer=optimizer, tensors=tensors, device=device,
        work_per_call=float(np.count_nonzero(batches[0]["targets"])),
        note=f"MarianMTModel eager, AdamW, {device}, {torch.get_num_threads()} threads",
    )  # fmt: skip


def generate_tokens(
    model: transformers.MarianMTModel, inputs: np.ndarray, *, beam_size: int, length: int
) -> np.ndarray:
    """Generated ids ``[batch, length]`` (decoder start dropped) of exactly ``length`` steps.

    EOS is suppressed for ``length - 1`` tokens (``min_new_tokens``) and forced at the last one
    (``marian_test_config``'s ``forced_eos_token_id``), as s2s_jax's W3 decoding does.
    """
    device = next(model.parameters()).device
    src = torch.from_numpy(inputs).long().to(device)
    with torch.inference_mode():
        out = model.generate(
            input_ids=src, attention_mask=src != PAD_ID, num_beams=beam_size, do_sample=False,
            min_new_tokens=length - 1, max_new_tokens=length, length_penalty=1.0,
            early_stopping=False, num_return_sequences=1,
        )  # fmt: skip
    return out[:, 1:].cpu().numpy()


def generate_system(
    workload: str,
    model: transformers.MarianMTModel,
    inputs: np.ndarray,
    *,
    beam_size: int,
    length: int,
) -> System:
    """``generate`` on ``inputs`` [batch, src_len] (eval mode), as a System."""
    device = torch_device()
    model = model.to(device).eval()

    def run_once() -> None:
        generate_tokens(model, inputs, beam_size=beam_size, length=length)
        synchronize(device)

    return System(
        workload=workload,
        name="hf_generate",
        run_once=run_once,
        work_per_call=float(inputs.shape[0] * length),
        peer=True,
        note=f"generate, length_penalty 1.0, {device}",
    )
