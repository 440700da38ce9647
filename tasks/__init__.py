"""Built-in evalkit tasks: one file per task (see evalkit.registry for how they are found)."""
