"""Float-frame sources: noisy one-hot digit frames -> the digits reversed, with LSTMs.

Proves the non-token seam: every source position is a 10-feature float frame (a one-hot digit
plus Gaussian noise, `data.task="noisy_digits"`), projected into the encoder by the `features`
front end (`model.encoder.input="features"`); the batch's `inputs_mask` gives the lengths. The
decoder is the attention LSTM of experiments/reverse_attention.py.

    s2s train --config experiments/noisy_digits_lstm.py --workdir runs/noisy_digits_lstm
    s2s evaluate --workdir runs/noisy_digits_lstm --beam-size 4
"""

from pathlib import Path

from s2s_jax.config import load_experiment


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_attention.py"), variant)
    c.name = "noisy_digits_lstm" + ("_tiny" if variant == "tiny" else "")
    c.data.task = "noisy_digits"
    c.model.encoder.input = "features"
    return c
