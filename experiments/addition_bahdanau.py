"""Addition ("123+4567" -> "4690") with a bidirectional GRU encoder and Bahdanau attention.

Operands have 1-6 digits; the held-out sums are disjoint from training.

    s2s train --config experiments/addition_bahdanau.py --workdir runs/addition_bahdanau
"""

from s2s_jax.config import base_config, make_tiny, model_part


def get_config(variant: str = ""):
    c = base_config()
    c.name = "addition_bahdanau"
    c.model.encoder = model_part(
        "encoder", "rnn", cell="gru", bidirectional=True, embed_dim=32, hidden_size=128
    )
    c.model.decoder = model_part(
        "decoder", "rnn", cell="gru", attention="bahdanau", embed_dim=32, hidden_size=128
    )
    c.data.task = "addition"
    c.data.min_length, c.data.max_length = 1, 6
    c.data.num_train, c.data.num_eval = 50000, 1000
    c.data.batch_size = 64
    c.train.num_steps = 4000
    c.train.learning_rate = 3e-3
    c.eval.every_steps = 1000
    c.checkpoint.every_steps = 1000
    if variant == "tiny":
        make_tiny(c, min_length=2, max_length=3)
        for part in (c.model.encoder, c.model.decoder):
            part.embed_dim, part.hidden_size = 16, 32
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny.")
    return c
