"""Validation shared by the part configs; JAX-free, so loading a run config never starts JAX."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # ``types.DTYPES`` maps them to jnp dtypes


def check_choice(owner: str, field: str, value: str, valid: Iterable[str]) -> None:
    """Raises ValueError naming the valid choices when ``value`` is not one of them."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{owner}.{field}={value!r} is not supported; choose one of: {valid}.")


def check_positive(owner: str, config: Any, fields: Iterable[str]) -> None:
    """Raises ValueError for the first of ``fields`` that is not a positive number."""
    for field in fields:
        value = getattr(config, field)
        if value <= 0:
            raise ValueError(f"{owner}.{field} must be positive, got {value}.")


def check_rates(owner: str, config: Any, fields: Iterable[str]) -> None:
    """Raises ValueError for a dropout-like rate outside [0, 1)."""
    for field in fields:
        value = getattr(config, field)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{owner}.{field} must be in [0, 1), got {value}.")
