"""Per-document metrics, aggregation, closed-form and bootstrap stderr, group rows and significance tests
(pure numpy/scipy).

Imports: May import ``evalkit.types`` only. No torch.
"""
