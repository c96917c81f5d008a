"""Deprecated path, kept for compatibility: the pipeline report is :mod:`chimed_trl.reporting.pipeline`."""

from chimed_trl._compat import forward  # noqa: E402
from chimed_trl.reporting.pipeline import collect, render, write_report  # noqa: F401  (deprecated path, kept)

__getattr__ = forward(
    __name__,
    (
        "chimed_trl.reporting.pipeline",
        "chimed_trl.reporting.paper",
        "chimed_trl.reporting.markdown",
        "chimed_trl.reporting.charts",
    ),
)
