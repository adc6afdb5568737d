"""Export a trained workdir for serving: ``s2s export --workdir W --to TARGET OUT``.

Targets: hf-marian, ct2, stablehlo.

  marian.py     s2s_jax Transformer pair -> Hugging Face ``MarianMTModel`` (the inverse of
                ``models/marian.py``), refusing configs Marian cannot express.
  tokenizers.py the workdir's vocabularies as SentencePiece files (Marian's source/target.spm).
  ct2.py        the exported Hugging Face model -> CTranslate2 (keeping s2s_jax's decoder start).
  stablehlo.py  greedy and beam decoding serialized with ``jax.export`` for one bucket shape.
  loader.py     runs a StableHLO export from its files alone (jax, numpy, sentencepiece).
  workdir.py    the trained workdir (checks, restore) and the staged, renamed-into-place output.
  command.py    ``main(argv)``, the command line.

This package sits beside ``run/`` at the top of the layers: it reads a workdir through
``run.components`` and nothing below imports it. torch, transformers and ctranslate2 are
imported only by the targets that need them.
"""
