"""Spanish -> English Bible translation with an LSTM encoder-decoder and Luong attention.

Data: the project-built `bible_es_en` TFDS dataset (built on first use from Debian's SWORD
modules: `apt-get install sword-text-sparv sword-text-web`), split by book; a shared 8k
SentencePiece unigram vocabulary trained on the train split and saved in the workdir.

    s2s train --config experiments/bible_es_en_lstm_attention.py --workdir runs/bible_lstm
    s2s evaluate --workdir runs/bible_lstm --split test --beam-size 4

Variants: `tiny` (tests), `cpu1h` (the same model with a schedule sized to finish in about
50 minutes on a 2-core CPU: the run reported for this corpus in the README).
"""

from s2s_jax.config import base_config, make_tiny, model_part, set_parts


def get_config(variant: str = ""):
    c = base_config()
    c.name = "bible_es_en_lstm_attention"
    c.model.encoder = model_part("encoder", "rnn", bidirectional=True, num_layers=1)
    c.model.decoder = model_part(
        "decoder", "rnn", attention="luong_general", input_feeding=True, num_layers=2
    )
    set_parts(c.model, cell="lstm", embed_dim=256, hidden_size=256, dropout=0.2)
    _real_data(c)
    c.train.num_steps = 12000
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 500
    c.train.label_smoothing = 0.1
    if variant == "tiny":
        _tiny(c)
        set_parts(c.model, embed_dim=16, hidden_size=32)
        c.model.decoder.num_layers = 1
    elif variant == "cpu1h":
        _cpu1h(c, num_steps=2400, warmup_steps=300)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny, cpu1h.")
    return c


def _real_data(c):
    """Shared by the Bible experiments: data and evaluation settings."""
    c.data.source = "tfds"
    c.data.tfds_name = "bible_es_en"
    c.data.src_lang, c.data.tgt_lang = "es", "en"
    c.data.vocab_size = 8000
    c.data.shared_vocab = True
    c.data.max_tokens = 64
    c.data.batch_size = 64
    c.eval.every_steps = 2000
    c.eval.max_examples = 400  # periodic BLEU on a validation subset; `s2s evaluate` runs all
    c.eval.batch_size = 100
    c.eval.max_length_ratio, c.eval.max_length_offset = 1.5, 10
    c.checkpoint.every_steps = 1000


def _cpu1h(c, *, num_steps: int, warmup_steps: int):
    """Shared by the Bible experiments: a cosine schedule that ends inside a 1-hour CPU budget."""
    c.train.num_steps = num_steps
    c.train.warmup_steps = warmup_steps
    c.train.schedule = "cosine"
    c.eval.every_steps = 800
    c.checkpoint.every_steps = 400


def _tiny(c):
    make_tiny(c)
    c.data.vocab_size = 300
    c.data.max_tokens = 24
    c.eval.max_examples = 16
