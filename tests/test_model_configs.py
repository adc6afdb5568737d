"""The config modules' name tuples agree with the registries of the layer code.

``transformer_config.py`` and ``rnn_config.py`` hold names only (no layer code), so that a
config can be checked and described without importing the layers; the layers look the same
names up in their own registries. A name added on one side only would pass validation and then
fail deep inside ``setup`` (or never be selectable): these tests catch that at once.
"""

import pytest

from s2s_jax.models import frontends, positions, rnn, rnn_attention, rnn_config
from s2s_jax.models import transformer_config as tc
from s2s_jax.models import transformer_layers as layers
from s2s_jax.models.decoders import rnn as rnn_decoder

PAIRS = {
    "activation": (tc.ACTIVATION_NAMES, layers.ACTIVATIONS),
    "norm": (tc.NORM_NAMES, layers.NORMS),
    "remat_policy": (tc.REMAT_NAMES, layers.REMAT_POLICIES),
    "position table": (tc.POSITION_TABLE_NAMES, positions.POSITION_TABLES),
    "transformer input": (tc.INPUT_NAMES, frontends.FRONTENDS),
    "cell": (rnn_config.CELL_NAMES, rnn.CELLS),
    "rnn attention": (rnn_config.ATTENTION_NAMES, rnn_decoder.DECODER_STEPS),
    "rnn input": (rnn_config.INPUT_NAMES, frontends.FRONTENDS),
}


@pytest.mark.parametrize("what", sorted(PAIRS))
def test_config_names_equal_the_layer_registry(what):
    names, registry = PAIRS[what]
    assert isinstance(names, tuple) and len(set(names)) == len(names)
    assert names == tuple(registry), what


def test_positions_are_the_tables_plus_the_relative_kinds():
    assert (*positions.POSITION_TABLES, "rope", "t5_relative") == tc.POSITION_NAMES


def test_every_attending_decoder_step_has_an_attention_mechanism():
    # "none" is the context-vector decoder; every other wiring names a mechanism.
    assert set(rnn_decoder.DECODER_STEPS) == {"none", *rnn_attention.ATTENTIONS}
