"""The task model: Python task files, evalkit YAML and lm-eval 0.4 YAML task files, jinja2 templating, and the
registry of tasks and groups. Built-in task files live in the repository's ``tasks/`` folder (installed as
``evalkit.builtin_tasks``).

Imports: May import ``evalkit.types``, ``evalkit.stats``, ``evalkit.fewshot``. No torch.
"""
