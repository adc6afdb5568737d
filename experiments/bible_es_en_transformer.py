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

from s2s_jax.config import base_config, load_experiment


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("bible_es_en_lstm_attention.py"), variant)
    c.name = "bible_es_en_transformer" + ("_tiny" if variant == "tiny" else "")
    c.model = base_config().model  # a fresh model section: nothing of the LSTM carries over
    c.model.family = "transformer"
    c.model.d_model, c.model.num_heads, c.model.mlp_dim = 256, 4, 1024
    c.model.encoder_layers = c.model.decoder_layers = 3
    c.model.pre_norm = False
    c.model.dropout = 0.1
    c.model.share_embeddings, c.model.tie_output = True, True
    c.train.optimizer = "adamw"
    c.train.weight_decay = 0.01
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5 if variant == "tiny" else 1000
    if variant == "tiny":
        c.model.d_model, c.model.num_heads, c.model.mlp_dim = 16, 2, 32
        c.model.encoder_layers = c.model.decoder_layers = 1
    elif variant == "cpu1h":
        c.train.num_steps, c.train.warmup_steps = 1800, 250  # the rest of cpu1h as the LSTM's
        c.model.pre_norm = True
        c.train.learning_rate = 1.5e-3
        c.data.pack_length, c.data.batch_size = 128, 16  # 16 rows x 128 tokens per step
    return c
