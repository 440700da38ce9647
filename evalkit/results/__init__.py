"""Results files: writing them atomically, their schema checked on read, the end-of-run summary rows, export
(lm-eval layout, CSV) and pandas frames.

Imports: May import ``evalkit.stats``, ``evalkit.types``. No torch.
"""
