"""Sequence-to-sequence models.

Every model family is a linen module exposing the same methods, so training, evaluation and
decoding never branch on the family:

    encode(inputs, *, train, inputs_segmentation=None, inputs_position=None) -> encoded
        inputs:  [batch, src_len] int32, PAD_ID (0) is padding.
        encoded: pytree whose leaves have a leading batch dim (e.g. outputs, source mask).
        inputs_segmentation, inputs_position: see "Packed batches" below.

    decode(encoded, decoder_inputs, *, train, targets_segmentation=None,
           targets_position=None, return_attention=False) -> logits
        decoder_inputs: [batch, tgt_len] int32 (targets shifted right, BOS first).
        logits: [batch, tgt_len, tgt_vocab] float32. With return_attention=True returns
        (logits, attention) where attention is [batch, tgt_len, src_len] (averaged over heads
        and, for Transformers, the last decoder layer).

    init_decode(encoded, max_length) -> (memory, cache)
        Called once per source batch before step-by-step decoding.
        memory: pytree, leaves [batch, ...]; constant during decoding and never copied per beam
                (e.g. encoder outputs, precomputed attention keys, source mask).
        cache:  pytree, every leaf [batch, 1, ...] (beam dim 1); decoders tile it to the beam size
                and reorder it by gathering along axis 1, except nodes that manage their own
                beam axis (``decoding.hypotheses.ManagesBeams``, e.g. the Transformer's
                ``StepCache``, whose buffers never move when beams are reordered).
        max_length: static int, the most decoder steps that will be taken.

    decode_step(memory, ids, cache) -> (logits, cache)
        ids:    [batch, beam] int32, the previous token (BOS at the first step).
        logits: [batch, beam, tgt_vocab] float32 (unnormalised).
        Always deterministic (no dropout). Stepping through a sequence gives the same logits as
        `decode` on the whole prefix.

    for_decoding(params) -> (model, params)
        Called on the unbound model: the pair that generation runs init_decode/decode_step
        with (e.g. a Transformer with scanned layers returns its unrolled twin and unstacked
        params, since a step runs the layers one by one). Same logits either way.

    __call__(inputs, decoder_inputs, *, train, inputs_segmentation=None,
             targets_segmentation=None, inputs_position=None, targets_position=None) -> logits
        encode then decode.

Packed batches (``s2s_jax.data.packing``): several examples share a row.
    *_segmentation: [batch, len] int32, 1, 2, ... per example, 0 on padding. Give both
        (inputs_segmentation to encode, targets_segmentation to decode) or neither.
    *_position: [batch, len] int32, restarting at 0 per segment (defaults: derived from the
        segmentation when packed, else 0..len-1).
    Decoder inputs restart with BOS per segment (``data.packing.shift_right_packed``). A packed
    example gets the same logits as the example alone in an unpacked row: no attention crosses
    segments. With no packing arguments the behaviour is the unpacked one. Transformers support
    packing; RNN models raise ValueError (a recurrent state would flow across examples).
    init_decode / decode_step never pack (a packed ``encoded`` is rejected).

Parameters and activations carry logical axis names (see ``s2s_jax/parallel``):
"batch", "length", "embed", "hidden", "mlp", "heads", "kv", "vocab", "layers".
"""
