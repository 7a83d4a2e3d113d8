"""Evaluation beyond a task's own metrics: sample quality of generative models, reports.

Import the modules themselves (``lit_dl.evaluation.sample_quality``, ...); nothing heavy is
imported here.
"""
