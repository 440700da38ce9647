"""One split of a dataset -> validated documents (local files or the hub), the seeded ``--limit`` subset, and
the checks that the data a run needs is there (local files, hub reachability).

Imports: May import ``evalkit.types`` only. No torch.
"""
