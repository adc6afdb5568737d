"""Memory of beam search vs greedy: the encoder output is not copied per beam.

Compiles the jitted generate function (encoder + decoding loop) for greedy, beam 1 and beam 4 on
the W3 shapes (16 sources of length 32, 32 generated tokens) and prints XLA's compiled memory
analysis: temporaries and arguments. Beam search state grows with the beam (hypotheses, caches,
scores); the encoder memory (outputs, precomputed attention keys) stays at batch size, so the
growth from beam 1 to 4 is far less than 4x the greedy footprint.

    python benchmarks/beam_memory.py
"""

from __future__ import annotations

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.config import MODEL_PARTS, apply_overrides, base_config
from s2s_jax.decoding.generate import DecodeConfig, jit_generate
from s2s_jax.models.registry import build_model
from s2s_jax.training.state import init_variables


def _pair(type_name: str, **both) -> dict[str, str]:
    """Config overrides: ``type_name`` encoder and decoder, each with the keys ``both``."""
    overrides = {f"model.{side}.type": type_name for side in MODEL_PARTS}
    for side in MODEL_PARTS:
        overrides |= {f"model.{side}.{key}": str(value) for key, value in both.items()}
    return overrides


MODELS = {
    "transformer_w2": _pair("transformer", d_model=256, num_heads=4, mlp_dim=1024, num_layers=3),
    "lstm_w1": _pair("rnn", embed_dim=256, hidden_size=512, num_layers=2),
}


def measure(name: str, vocab: int, batch: int, src_len: int, gen_len: int) -> list[dict]:
    config = apply_overrides(base_config(), list(MODELS[name].items()))
    model, _ = build_model(config.model, vocab, vocab)
    inputs = jnp.ones((batch, src_len), jnp.int32)
    inputs_mask = jnp.ones((batch, src_len), bool)
    params = jax.eval_shape(
        lambda: nn.meta.unbox(init_variables(model, jax.random.key(0), src_len, src_len))
    )["params"]
    rows = []
    for method, beam in (("greedy", 1), ("beam", 1), ("beam", 4)):
        cfg = DecodeConfig(method=method, beam_size=beam, max_length_ratio=gen_len / src_len,
                           max_length_offset=0)  # fmt: skip
        compiled = jit_generate(model, cfg).lower(params, inputs, inputs_mask).compile()
        stats = compiled.memory_analysis()
        rows.append({
            "model": name, "method": method, "beam": beam,
            "temp_MiB": stats.temp_size_in_bytes / 2**20,
            "argument_MiB": stats.argument_size_in_bytes / 2**20,
        })  # fmt: skip
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--src-len", type=int, default=32)
    parser.add_argument("--gen-len", type=int, default=32)
    args = parser.parse_args(argv)
    rows = []
    for name in MODELS:
        rows += measure(name, args.vocab, args.batch, args.src_len, args.gen_len)
    print(f"{'model':16} {'method':7} {'beam':>4} {'temp MiB':>9} {'args MiB':>9}")
    for r in rows:
        print(f"{r['model']:16} {r['method']:7} {r['beam']:>4} {r['temp_MiB']:9.2f} "
              f"{r['argument_MiB']:9.2f}")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
