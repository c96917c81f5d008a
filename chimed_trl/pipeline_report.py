"""Deprecated path, kept for compatibility: the pipeline report is :mod:`chimed_trl.reporting.pipeline`."""

from chimed_trl.reporting.pipeline import collect, render, write_report  # noqa: F401  (deprecated path, kept)
