"""Answering requests: tokenization, batching and packing, the Hugging Face backend, greedy generation, the request
cache, the non-finite guard, and data-parallel ranks.

Imports: May import ``evalkit.types``, ``evalkit.models``. torch and transformers only here and in ``evalkit.models``.
"""
