"""The ``evalkit`` command: argparse subcommands that build a RunConfig and call one function each.

Imports: May import every other evalkit package (it is the top of the import order, beside ``evalkit.api``).
"""
