"""Addition ("123+4567" -> "4690") with a small pre-LN Transformer (T5 relative position bias).

Same data as experiments/addition_bahdanau.py. Compare greedy and beam search afterwards:

    s2s train --config experiments/addition_transformer.py --workdir runs/addition_transformer
    s2s evaluate --workdir runs/addition_transformer                  # greedy
    s2s evaluate --workdir runs/addition_transformer --beam-size 4    # beam search
"""

from pathlib import Path

from s2s_jax.config import load_experiment, set_parts


def get_config(variant: str = ""):
    c = load_experiment(Path(__file__).with_name("reverse_transformer.py"), variant)
    c.name = "addition_transformer" + ("_tiny" if variant == "tiny" else "")
    set_parts(c.model, position="t5_relative")
    c.data.task = "addition"
    c.data.min_length, c.data.max_length = (2, 3) if variant == "tiny" else (1, 6)
    c.data.num_train = 512 if variant == "tiny" else 50000
    if not variant:
        c.train.num_steps = 12000  # 4000 steps reach ~92% exact match; 12000 reach 99.7%
        c.eval.every_steps = c.checkpoint.every_steps = 2000
    return c
