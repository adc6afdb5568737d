"""Benchmark workload W1: 2+2-layer LSTM encoder-decoder with Luong "general" attention.

The training step of /work/shared/bench/WORKLOADS.md W1: vocabularies of 8000 (source and
target), embeddings 256, LSTM hidden 512 in both stacks, attentional hidden tanh(W [c; h]) of
512 (no input feeding), Adam at a constant 1e-3, no clipping, batch 64, source and target length
32. The vocabulary size comes from `--vocab-size` (synthetic random-token batches); the task data
here only fixes the length (31 digits + EOS = 32, one bucket), so `s2s train` on this file runs
the same shapes on the copy task with its 14-symbol vocabulary.

    s2s profile --config experiments/bench_w1_lstm.py --workdir runs/bench_w1 --vocab-size 8000
    s2s profile --config experiments/bench_w1_lstm.py:tiny --workdir /tmp/w1 --vocab-size 64
"""

from s2s_jax.config import base_config, fixed_length_data, model_part, set_parts


def get_config(variant: str = ""):
    c = base_config()
    c.name = "bench_w1_lstm"
    c.model.encoder = model_part("encoder", "rnn")
    c.model.decoder = model_part("decoder", "rnn", attention="luong_general", input_feeding=False)
    set_parts(c.model, cell="lstm", embed_dim=256, hidden_size=512, num_layers=2, dropout=0.0)
    c.train.optimizer, c.train.learning_rate = "adam", 1e-3
    c.train.schedule, c.train.warmup_steps, c.train.grad_clip_norm = "constant", 0, 0.0
    fixed_length_data(c, length=32, batch_size=64)
    if variant == "tiny":
        c.name += "_tiny"
        set_parts(c.model, embed_dim=16, hidden_size=32)
        fixed_length_data(c, length=8, batch_size=8)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; this experiment has: tiny.")
    return c
