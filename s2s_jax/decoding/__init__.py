"""Model-agnostic decoding: beam search, greedy decoding and sampling.

The only hook into a model is `tokens_to_logits(ids, cache) -> (logits, cache)` with ids
`[batch, beam]`, every cache leaf `[batch, beam, ...]` (given as beam 1, tiled and reordered
here; a cache node may manage its own beam axis instead, see `hypotheses.ManagesBeams`) and
logits `[batch, beam, vocab]`. Each function is one `lax.while_loop`; call it under
`jax.jit` with the sizes as static arguments.
"""

from s2s_jax.decoding.beam_search import beam_search, length_penalty
from s2s_jax.decoding.hypotheses import DecodeResult, TokensToLogits
from s2s_jax.decoding.processors import DecodeConstraints, apply_constraints, make_constraints
from s2s_jax.decoding.sampling import greedy, sample, top_k_filter, top_p_filter

__all__ = [
    "DecodeConstraints",
    "DecodeResult",
    "TokensToLogits",
    "apply_constraints",
    "beam_search",
    "greedy",
    "length_penalty",
    "make_constraints",
    "sample",
    "top_k_filter",
    "top_p_filter",
]
