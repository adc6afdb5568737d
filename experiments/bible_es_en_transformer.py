"""Spanish -> English Bible translation with a Transformer (post-LN, as Marian; tied embeddings).

Same data, vocabulary and evaluation as experiments/bible_es_en_lstm_attention.py.

    s2s train --config experiments/bible_es_en_transformer.py --workdir runs/bible_transformer
    s2s evaluate --workdir runs/bible_transformer --split test --beam-size 4
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
    return c
