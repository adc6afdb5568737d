"""Evaluation: decoding a split, scoring it with the metrics a task chooses, writing reports."""
