"""FLOPs of a traced program, counted on its jaxpr with loop trip counts.

XLA's ``compiled.cost_analysis()`` counts the body of a ``while`` loop once, whatever its trip
count. ``lax.scan`` lowers to a while loop, so for a model that scans over time (the LSTM
encoder and decoder) or over layers (scanned Transformer stacks) the XLA figure misses most of
the work. This counter walks the jaxpr instead, where a scan still carries its ``length``.

Conventions follow XLA's cost analysis, so both agree on loop-free programs: a multiply-add is
two FLOPs; elementwise arithmetic and comparisons are one FLOP per output element; reductions
one per input element; transcendental functions (exp, log, tanh, ...) and data movement
(reshape, gather, transposes, converts) count zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core

_ELEMENTWISE = frozenset(
    {
        "abs", "add", "add_any", "and", "ceil", "clamp", "div", "eq", "floor", "ge", "gt",
        "integer_pow", "le", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not", "or",
        "rem", "round", "select_n", "sign", "square", "sub", "xor",
    }
)  # fmt: skip
_REDUCTIONS = frozenset(
    {
        "argmax", "argmin", "cumlogsumexp", "cummax", "cummin", "cumprod", "cumsum",
        "reduce_and", "reduce_max", "reduce_min", "reduce_or", "reduce_prod", "reduce_sum",
    }
)  # fmt: skip


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """FLOPs of one call of ``fn(*args, **kwargs)``, scan bodies counted ``length`` times.

    Args:
      fn: any traceable function, jitted or not (e.g. the jitted train step). A jitted one takes
        the arguments it is called with, static ones included.
      *args: its arguments, arrays or ``jax.ShapeDtypeStruct`` (nothing is computed).
      **kwargs: its keyword arguments.

    Returns:
      The FLOPs of the whole (global, unsharded) computation. ``while_loop`` bodies with a
      data-dependent trip count are counted once, as XLA does.
    """
    if isinstance(fn, jax.stages.Wrapped):  # a jitted function: honours its static arguments
        closed = fn.trace(*args, **kwargs).jaxpr
    else:
        closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return jaxpr_flops(closed.jaxpr)


def jaxpr_flops(jaxpr: jex_core.Jaxpr) -> float:
    """FLOPs of one evaluation of ``jaxpr`` (see the module docstring for the conventions)."""
    return float(sum(_eqn_flops(eqn) for eqn in jaxpr.eqns))


def _size(var: Any) -> int:
    return math.prod(getattr(var.aval, "shape", ()))


def _eqn_flops(eqn: jex_core.JaxprEqn) -> float:
    name = eqn.primitive.name
    if name in _RULES:
        return _RULES[name](eqn)
    subs = list(jex_core.jaxprs_in_params(eqn.params))
    if subs:  # jit, custom_jvp/vjp calls, remat, while: every sub-program runs once
        return sum(jaxpr_flops(sub) for sub in subs)
    if name in _ELEMENTWISE:
        return float(sum(_size(v) for v in eqn.outvars))
    if name in _REDUCTIONS:
        return float(_size(eqn.invars[0]))
    return 0.0


def _dot_general(eqn: jex_core.JaxprEqn) -> float:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    depth = math.prod(lhs_shape[d] for d in lhs_contracting)
    return 2.0 * _size(eqn.outvars[0]) * depth


def _conv(eqn: jex_core.JaxprEqn) -> float:
    rhs_shape = eqn.invars[1].aval.shape
    out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    # Each output element is a dot over one kernel slice: (in_features / groups) * window.
    return 2.0 * _size(eqn.outvars[0]) * math.prod(rhs_shape) / out_features


def _scan(eqn: jex_core.JaxprEqn) -> float:
    return eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"].jaxpr)


def _cond(eqn: jex_core.JaxprEqn) -> float:
    return max(jaxpr_flops(branch.jaxpr) for branch in eqn.params["branches"])


def _shard_map(eqn: jex_core.JaxprEqn) -> float:
    # The body sees per-device shapes and runs once on every device of its manual axes.
    mesh = eqn.params["mesh"]
    copies = math.prod(mesh.shape[axis] for axis in eqn.params["newly_manual_axes"])
    return copies * jaxpr_flops(eqn.params["jaxpr"])


_RULES: dict[str, Callable[[jex_core.JaxprEqn], float]] = {
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "scan": _scan,
    "cond": _cond,
    "shard_map": _shard_map,
}
