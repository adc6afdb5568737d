"""Spanish -> English Bible translation with a Transformer (post-LN, as Marian; tied embeddings).

Same data, vocabulary and evaluation as experiments/bible_es_en_lstm_attention.py.

    s2s train --config experiments/bible_es_en_transformer.py --workdir runs/bible_transformer
    s2s evaluate --workdir runs/bible_transformer --split test --beam-size 4

Variants: `tiny` (tests) and `cpu1h`, sized for about 50 minutes on a 2-core CPU: pre-LN (which
tolerates a short warmup and a high learning rate, Xiong et al. 2020, where post-LN would spend
much of so short a run warming up) and packed rows of 128 tokens (no padding compute, one
compiled shape).
"""

from pathlib import Path

from s2s_jax.config import load_experiment, model_part, set_parts


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("bible_es_en_lstm_attention.py"), variant)
    c.name = "bible_es_en_transformer" + ("_tiny" if variant == "tiny" else "")
    c.model.encoder = model_part("encoder", "transformer")  # fresh parts: nothing of the LSTM
    c.model.decoder = model_part("decoder", "transformer", tie_output=True)
    set_parts(c.model, d_model=256, num_heads=4, mlp_dim=1024, num_layers=3, pre_norm=False)
    set_parts(c.model, dropout=0.1)
    c.model.share_embeddings = True
    c.train.optimizer = "adamw"
    c.train.weight_decay = 0.01
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5 if variant == "tiny" else 1000
    if variant == "tiny":
        set_parts(c.model, d_model=16, num_heads=2, mlp_dim=32, num_layers=1)
    elif variant == "cpu1h":
        c.train.num_steps, c.train.warmup_steps = 1800, 250  # the rest of cpu1h as the LSTM's
        set_parts(c.model, pre_norm=True)
        c.train.learning_rate = 1.5e-3
        c.data.pack_length, c.data.batch_size = 128, 16  # 16 rows x 128 tokens per step
    return c
