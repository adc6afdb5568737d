"""Float-frame sources: noisy one-hot digit frames -> the digits reversed, with a Transformer.

The task of experiments/noisy_digits_lstm.py (10-feature float frames through the `features`
front end) with the Transformer of experiments/reverse_transformer.py; token embeddings cannot
be shared with frames, so each side has its own.

    s2s train --config experiments/noisy_digits_transformer.py --workdir runs/noisy_digits_transformer
"""

from pathlib import Path

from s2s_jax.config import load_experiment


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_transformer.py"), variant)
    c.name = "noisy_digits_transformer" + ("_tiny" if variant == "tiny" else "")
    c.data.task = "noisy_digits"
    c.model.encoder.input = "features"
    c.model.share_embeddings = False
    return c
