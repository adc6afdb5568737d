"""Digit-string reversal with a bidirectional LSTM encoder and a Transformer decoder.

A mixed pair: the decoder's cross-attention reads the LSTM's outputs (128 wide) through its own
key/value projections. Same data and schedule as experiments/reverse_transformer.py.

    s2s train --config experiments/reverse_lstm_transformer.py --workdir runs/reverse_lstm_transformer
"""

from pathlib import Path

from s2s_jax.config import load_experiment, model_part


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_transformer.py"), variant)
    c.name = "reverse_lstm_transformer" + ("_tiny" if variant == "tiny" else "")
    c.model.share_embeddings = False  # the LSTM embeds into 32, the decoder into d_model
    c.model.encoder = model_part(
        "encoder", "rnn", cell="lstm", bidirectional=True, embed_dim=32, hidden_size=64
    )
    if variant == "tiny":
        c.model.encoder.embed_dim, c.model.encoder.hidden_size = 16, 16
    return c
