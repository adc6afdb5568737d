"""W1 peer: the LSTM encoder-decoder with Luong "general" attention in eager PyTorch.

The architecture of ``experiments/bench_w1_lstm.py`` written the way a PyTorch user would:
``nn.LSTM`` stacks run the whole sequence (teacher forcing, no input feeding), then attention
over the top decoder layer's outputs for all target positions at once:

    scores = h_t^T W k_s,  a = softmax over real source positions,  c_t = sum_s a_s k_s
    attentional_t = tanh(W_c [c_t; h_t]),  logits_t = W_o attentional_t + b_o

Decoder layer i starts from encoder layer i's final ``(h, c)``. ``nn.LSTM`` has two biases per
layer (``b_ih`` and ``b_hh``); s2s_jax's cell has one, so ``b_hh`` is zeroed and frozen: the
same function and the same trainable parameter count. Sources must be unpadded (the W1
batches are): ``nn.LSTM`` without packing would read PAD into the final states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import torch
from torch import nn

from benchmarks.harness import System
from benchmarks.peers import torch_device, torch_training_system
from s2s_jax.data.vocab import BOS_ID, PAD_ID


class LuongLSTM(nn.Module):
    """Embeddings, LSTM encoder and decoder, Luong general attention, output projection."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, embed)
        self.tgt_embed = nn.Embedding(vocab, embed)
        self.encoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.decoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.key_proj = nn.Linear(hidden, hidden, bias=False)
        self.attentional = nn.Linear(2 * hidden, hidden, bias=False)
        self.output = nn.Linear(hidden, vocab)
        for lstm in (self.encoder, self.decoder):
            for layer in range(layers):
                bias = getattr(lstm, f"bias_hh_l{layer}")
                nn.init.zeros_(bias)
                bias.requires_grad_(False)

    def forward(self, src: torch.Tensor, decoder_inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, tgt_len, vocab]`` of src ``[batch, src_len]`` and decoder inputs."""
        enc_out, state = self.encoder(self.src_embed(src))
        dec_out, _ = self.decoder(self.tgt_embed(decoder_inputs), state)
        scores = torch.bmm(dec_out, self.key_proj(enc_out).transpose(1, 2))
        scores = scores.masked_fill((src == PAD_ID)[:, None, :], float("-inf"))
        context = torch.bmm(torch.softmax(scores, dim=-1), enc_out)
        attentional = torch.tanh(self.attentional(torch.cat([context, dec_out], dim=-1)))
        return self.output(attentional)


# What the peer mirrors: keys of model.encoder / model.decoder and the values they must have.
_MIRRORED = {
    "encoder": {"type": "rnn", "cell": "lstm", "bidirectional": False, "input": "tokens"},
    "decoder": {"type": "rnn", "cell": "lstm", "attention": "luong_general",
                "input_feeding": False},
}  # fmt: skip
_SHARED_SIZES = ("embed_dim", "hidden_size", "num_layers")


def build_model(model: ml_collections.ConfigDict, vocab: int) -> LuongLSTM:
    """The peer of a W1 ``model`` config section: an LSTM encoder and an LSTM decoder with Luong
    general attention, no input feeding, separate tables, equal sizes and depths."""
    wrong = [
        f"model.{side}.{key}={model[side].get(key)!r} (needs {value!r})"
        for side, needed in _MIRRORED.items()
        for key, value in needed.items()
        if model[side].get(key) != value
    ]
    wrong += [
        f"model.encoder.{key}={model.encoder[key]} != model.decoder.{key}={model.decoder[key]}"
        for key in _SHARED_SIZES
        if model.encoder[key] != model.decoder[key]
    ]
    if model.share_embeddings:
        wrong.append("model.share_embeddings=True (needs False)")
    if wrong:
        raise ValueError(
            "The PyTorch W1 peer mirrors a unidirectional LSTM encoder and an LSTM decoder with "
            "luong_general attention, no input feeding, separate embeddings and equal sizes; "
            f"got {'; '.join(wrong)}."
        )
    enc = model.encoder
    return LuongLSTM(vocab, enc.embed_dim, enc.hidden_size, enc.num_layers)


def trainable_params(module: nn.Module) -> int:
    """Trainable parameters (frozen ``b_hh`` excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _copy(target: torch.Tensor, value: Any, transpose: bool = False) -> None:
    tensor = torch.from_numpy(np.array(value, dtype=np.float32))
    target.copy_(tensor.T if transpose else tensor)


def _load_lstm_layer(lstm: nn.LSTM, layer: int, input_kernel: Any, cell: Mapping) -> None:
    # s2s_jax kernels are [in, 4 * hidden] with gates i, f, g, o: nn.LSTM's order, transposed.
    _copy(getattr(lstm, f"weight_ih_l{layer}"), input_kernel, transpose=True)
    _copy(getattr(lstm, f"weight_hh_l{layer}"), cell["recurrent_kernel"], transpose=True)
    _copy(getattr(lstm, f"bias_ih_l{layer}"), cell["bias"])
    getattr(lstm, f"bias_hh_l{layer}").zero_()


def load_s2s_params(model: LuongLSTM, params: Mapping) -> None:
    """Copies an s2s_jax W1 parameter tree (an "rnn" encoder and an "rnn" decoder) into the
    peer, in place.

    The tree: ``encoder/{embedding, stack/layer_<i>/{input_proj, cell}}`` and
    ``decoder/{embedding, step/{attention/key_proj, cells/{input_proj_<i>, cell_<i>},
    attentional}, output_proj}`` (no ``decoder/bridge``: the decoder starts from the encoder's
    final states as they are). With the same weights both compute the same logits: the check
    that the peer is the same architecture (tests/test_benchmarks.py).
    """
    encoder_params, decoder_params = params["encoder"], params["decoder"]
    if "bridge" in decoder_params:
        raise ValueError(
            "The s2s_jax decoder has a bridge (encoder and decoder states of different sizes); "
            "the PyTorch W1 peer hands the encoder's final states to the decoder unchanged."
        )
    step, cells = decoder_params["step"], decoder_params["step"]["cells"]
    with torch.no_grad():
        _copy(model.src_embed.weight, encoder_params["embedding"]["embedding"])
        _copy(model.tgt_embed.weight, decoder_params["embedding"]["embedding"])
        for layer in range(model.encoder.num_layers):
            encoder = encoder_params["stack"][f"layer_{layer}"]
            _load_lstm_layer(model.encoder, layer, encoder["input_proj"]["kernel"], encoder["cell"])
            decoder_kernel = cells[f"input_proj_{layer}"]["kernel"]
            _load_lstm_layer(model.decoder, layer, decoder_kernel, cells[f"cell_{layer}"])
        # s2s_jax scores q . (k K) with K [enc, hidden]; Linear computes k W^T, so W = K^T.
        _copy(model.key_proj.weight, step["attention"]["key_proj"]["kernel"], transpose=True)
        _copy(model.attentional.weight, step["attentional"]["kernel"], transpose=True)
        _copy(model.output.weight, decoder_params["output_proj"]["kernel"], transpose=True)
        _copy(model.output.bias, decoder_params["output_proj"]["bias"])


def _decoder_inputs(targets: torch.Tensor) -> torch.Tensor:
    # Teacher forcing: BOS then the targets shifted right (the W1 targets have no PAD).
    bos = torch.full_like(targets[:, :1], BOS_ID)
    return torch.cat([bos, targets[:, :-1]], dim=1)


def train_system(
    workload: str,
    config: ml_collections.ConfigDict,
    vocab: int,
    batches: list[dict[str, np.ndarray]],
    seed: int = 0,
) -> System:
    """An eager train step (masked mean CE, Adam at ``config.train.learning_rate``) as a System."""
    if any(np.any(b["inputs"] == PAD_ID) for b in batches):
        raise ValueError("The PyTorch W1 peer needs unpadded sources; the batches contain PAD.")
    device = torch_device()
    torch.manual_seed(seed)
    model = build_model(config.model, vocab).to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.train.learning_rate)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID)
    tensors = [
        tuple(torch.from_numpy(b[k]).long().to(device) for k in ("inputs", "targets"))
        for b in batches
    ]

    def loss(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        logits = model(src, _decoder_inputs(tgt))
        return loss_fn(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))

    return torch_training_system(
        workload, "torch", loss=loss, optimizer=optimizer, tensors=tensors, device=device,
        work_per_call=float(np.count_nonzero(batches[0]["targets"])),
        note=f"eager nn.LSTM, {device}, {torch.get_num_threads()} threads",
    )  # fmt: skip
