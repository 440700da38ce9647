"""Baselines and ``evalkit check``: a run frozen with everything needed to re-run it, and every difference
when it is re-run.

Imports: May import ``evalkit.run``, ``evalkit.reports``, ``evalkit.results`` and the packages below them.
"""
