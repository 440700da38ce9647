"""Saved results rendered for people: the Markdown report, its figure, the paper-suite table and ``compare``.
Renders only from saved results; never imports torch.

Imports: May import ``evalkit.results``, ``evalkit.stats``, ``evalkit.types``, ``evalkit.import_gc``.
"""
