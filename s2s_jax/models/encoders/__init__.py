"""Encoders: one module per kind, registered in ``models/registry.py``."""
