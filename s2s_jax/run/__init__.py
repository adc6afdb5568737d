"""What runs things: the `s2s` command, building a run, train-and-evaluate, inference, profiling.

The top layer: nothing below (training, decoding, evaluation, models, data) imports it.
"""
