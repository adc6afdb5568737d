"""Digit-string reversal with a small pre-LN Transformer (sinusoidal positions).

Same data as experiments/reverse_attention.py (held-out strings of 5-20 digits).

    s2s train --config experiments/reverse_transformer.py --workdir runs/reverse_transformer
    s2s evaluate --workdir runs/reverse_transformer --beam-size 4
"""

from s2s_jax.config import base_config, make_tiny, model_part, set_parts


def get_config(variant: str = ""):
    c = base_config()
    c.name = "reverse_transformer"
    c.model.encoder = model_part("encoder", "transformer")
    c.model.decoder = model_part("decoder", "transformer")
    set_parts(c.model, d_model=64, num_heads=4, mlp_dim=256, num_layers=2, dropout=0.0)
    set_parts(c.model, position="sinusoidal")
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
        set_parts(c.model, d_model=16, num_heads=2, mlp_dim=32, num_layers=1)
        c.train.learning_rate = 3e-3
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny.")
    return c
