"""Digit-string reversal with a Transformer encoder and an LSTM decoder (Luong attention).

A mixed pair: the encoder of experiments/reverse_transformer.py feeding the attention decoder
of experiments/reverse_attention.py (which starts from a Dense+tanh of the mean encoder output,
since a Transformer has no final recurrent state). Same data and schedule as the latter.

    s2s train --config experiments/reverse_transformer_lstm.py --workdir runs/reverse_transformer_lstm
"""

from pathlib import Path

from s2s_jax.config import load_experiment, model_part


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_attention.py"), variant)
    c.name = "reverse_transformer_lstm" + ("_tiny" if variant == "tiny" else "")
    c.model.encoder = model_part(
        "encoder", "transformer", d_model=64, num_heads=4, mlp_dim=256, num_layers=2, dropout=0.0
    )
    if variant == "tiny":
        c.model.encoder.d_model, c.model.encoder.num_heads, c.model.encoder.mlp_dim = 16, 2, 32
        c.model.encoder.num_layers = 1
    return c
