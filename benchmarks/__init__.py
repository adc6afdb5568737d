"""Benchmarks of s2s_jax against the systems a user would pick instead (WORKLOADS.md W1-W4).

    python benchmarks/compare.py [--workloads W1,W2,W3,W4] [--rounds N] [--steps K]
                                 [--json out.json] [--tiny] [--peak-rss]

``compare`` is the runner; ``workloads`` holds the sizes and synthetic data, ``harness`` the
alternating timer, ``report`` the table, ratios and targets, ``s2s_side`` the s2s_jax systems
and ``peers`` the PyTorch, Hugging Face and CTranslate2 ones. ``training_systems`` names the
W1/W2 systems; ``peak_rss`` measures one of them in a child process of its own.
"""
