"""Digit-string reversal with the plain context-vector LSTM encoder-decoder (no attention).

The baseline beside experiments/reverse_attention.py (same data, sizes and schedule): one
fixed-size vector must carry the whole source, so exact match falls as strings get longer (see
exact_match/len_* in the eval metrics).

    s2s train --config experiments/reverse_plain.py --workdir runs/reverse_plain
"""

from pathlib import Path

from s2s_jax.config import load_experiment


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_attention.py"), variant)
    c.name = "reverse_plain" + ("_tiny" if variant == "tiny" else "")
    c.model.decoder.attention = "none"
    c.model.decoder.input_feeding = False
    return c
