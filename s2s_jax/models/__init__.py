"""Sequence-to-sequence models: any registered encoder paired with any registered decoder.

- ``types.py``: the pair interface (``Seq2SeqModel``: encode / decode / init_decode /
  decode_step / for_decoding / example_inputs), array aliases, dtypes.
- ``registry.py``: ``ENCODERS`` and ``DECODERS`` (name -> config dataclass + module) and
  ``build_model(config.model, ...)``; ``seq2seq.py`` pairs an encoder with a decoder.
- ``encoders/`` (``rnn.py``, ``transformer.py``) and ``decoders/`` (``rnn.py``,
  ``transformer.py``): one file per kind. ``frontends.py``: what an encoder's input is (token
  embedding or float-frame projection). ``rnn_config.py`` / ``transformer_config.py``: the
  parts' hyperparameters (names only, no layer code).
- Shared layers: ``rnn.py`` (cells, stacked recurrences), ``recurrence.py`` (the time scans with
  their own VJP), ``rnn_attention.py`` (Bahdanau / Luong / multi-head attention of the RNN
  decoder), ``transformer_layers.py``, ``transformer_stack.py``, ``step_cache.py`` (the
  Transformer's decoding cache), ``positions.py``, ``tied_output.py``.
- ``marian.py``: Hugging Face MarianMTModel weights -> a Transformer pair.

Packed batches (``s2s_jax.data.packing``): several examples share a row.
    *_segmentation: [batch, len] int32, 1, 2, ... per example, 0 on padding. Give both
        (inputs_segmentation to encode, targets_segmentation to decode) or neither.
    *_position: [batch, len] int32, restarting at 0 per segment (defaults: derived from the
        segmentation when packed, else 0..len-1).
    A packed example gets the same logits as the example alone in an unpacked row: no attention
    crosses segments. Transformer parts support packing; recurrent parts raise ValueError (a
    recurrent state would flow across examples). init_decode / decode_step never pack.

Parameters and activations carry logical axis names (see ``s2s_jax/parallel``):
"batch", "length", "embed", "hidden", "mlp", "heads", "kv", "vocab", "layers".
"""
