"""Digit-string reversal with an LSTM encoder-decoder and Luong "general" attention.

The built-in default of `s2s train`. Held-out strings of 5-20 digits; reaches >= 99% exact match.

    s2s train --config experiments/reverse_attention.py --workdir runs/reverse_attention
    s2s train --config experiments/reverse_attention.py:tiny --workdir /tmp/tiny   # seconds
"""

from s2s_jax.config import base_config, make_tiny, model_part


def get_config(variant: str = ""):
    c = base_config()
    c.name = "reverse_attention"
    c.model.encoder = model_part("encoder", "rnn", cell="lstm", embed_dim=32, hidden_size=128)
    c.model.decoder = model_part(
        "decoder", "rnn", cell="lstm", embed_dim=32, hidden_size=128,
        attention="luong_general", input_feeding=True,
    )  # fmt: skip
    c.data.task = "reverse"
    c.data.min_length, c.data.max_length = 5, 20
    c.data.num_train, c.data.num_eval = 20000, 1000
    c.data.batch_size = 64
    c.train.num_steps = 2500
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 100
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
    if variant == "tiny":
        make_tiny(c)
        for part in (c.model.encoder, c.model.decoder):
            part.embed_dim, part.hidden_size = 16, 32
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny.")
    return c
