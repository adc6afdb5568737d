"""Digit-string reversal with a small pre-LN Transformer (sinusoidal positions).

Same data as experiments/reverse_attention.py (held-out strings of 5-20 digits).

    s2s train --config experiments/reverse_transformer.py --workdir runs/reverse_transformer
    s2s evaluate --workdir runs/reverse_transformer --beam-size 4
"""

from s2s_jax.config import base_config, make_tiny


def get_config(variant: str = ""):
    c = base_config()
    c.name = "reverse_transformer"
    c.model.family = "transformer"
    c.model.d_model, c.model.num_heads, c.model.mlp_dim = 64, 4, 256
    c.model.encoder_layers = c.model.decoder_layers = 2
    c.model.dropout = 0.0
    c.model.position = "sinusoidal"
    c.model.share_embeddings = True
    c.data.task = "reverse"
    c.data.min_length, c.data.max_length = 5, 20
    c.data.num_train, c.data.num_eval = 20000, 1000
    c.data.batch_size = 64
    c.train.optimizer = "adamw"
    c.train.num_steps = 3000
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 300
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
    if variant == "tiny":
        make_tiny(c)
        c.model.d_model, c.model.num_heads, c.model.mlp_dim = 16, 2, 32
        c.model.encoder_layers = c.model.decoder_layers = 1
        c.train.learning_rate = 3e-3
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny.")
    return c
