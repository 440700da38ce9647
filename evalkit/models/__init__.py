"""Loading models and tokenizers: model names resolved (presets, hub ids, folders, GGUF files), Hugging Face
and GGUF loading, tokenizers, device placement, ``--model-args``, and the content identity of weights.

Imports: May import ``evalkit.types``, ``evalkit.import_gc``. torch and transformers only here and in ``evalkit.scoring``.
"""
