"""One run as named stages: plan -> requests -> model -> answers -> results -> outputs.

Imports: May import every package below it: types, stats, fewshot, data, tasks, results, models, scoring, reports.
"""
