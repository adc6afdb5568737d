"""Benchmark workload W2: 3+3-layer Transformer, post-LN as Marian (variant "preln": pre-LN).

The training step of /work/shared/bench/WORKLOADS.md W2: d_model 256, 4 heads, FFN 1024 (ReLU),
one vocabulary of 8000 shared by source, target and the tied output projection, sinusoidal
positions up to 128, dropout 0.1, AdamW at a constant 1e-3 (weight decay 0.01 as torch's
default), no clipping, batch 64, source and target length 32. The vocabulary size comes from `--vocab-size` (synthetic random-token
batches); the task data here only fixes the length (31 digits + EOS = 32, one bucket).

    s2s profile --config experiments/bench_w2_transformer.py --workdir runs/bench_w2 --vocab-size 8000
    s2s profile --config experiments/bench_w2_transformer.py:preln --workdir runs/bench_w2_preln --vocab-size 8000
    s2s profile --config experiments/bench_w2_transformer.py:tiny --workdir /tmp/w2 --vocab-size 64
"""

from s2s_jax.config import base_config, fixed_length_data, model_part, set_parts

VARIANTS = ("preln", "tiny", "tiny_preln")


def get_config(variant: str = ""):
    if variant and variant not in VARIANTS:
        raise ValueError(
            f"Unknown variant {variant!r}; this experiment has: {', '.join(VARIANTS)}."
        )
    c = base_config()
    c.name = "bench_w2_transformer" + (f"_{variant}" if variant else "")
    c.model.encoder = model_part("encoder", "transformer")
    c.model.decoder = model_part("decoder", "transformer", tie_output=True)
    set_parts(c.model, d_model=256, num_heads=4, mlp_dim=1024, num_layers=3, activation="relu")
    set_parts(c.model, pre_norm="preln" in variant, position="sinusoidal", max_position=128)
    set_parts(c.model, dropout=0.1)
    c.model.share_embeddings = True
    c.train.optimizer, c.train.learning_rate, c.train.weight_decay = "adamw", 1e-3, 0.01
    c.train.schedule, c.train.warmup_steps, c.train.grad_clip_norm = "constant", 0, 0.0
    fixed_length_data(c, length=32, batch_size=64)
    if variant.startswith("tiny"):
        set_parts(c.model, d_model=16, num_heads=2, mlp_dim=32, num_layers=2)
        fixed_length_data(c, length=8, batch_size=8)
    return c
