"""Deprecated path, kept for compatibility: the evaluation report is :mod:`chimed_trl.reporting.evaluation`
and the paper's tables :mod:`chimed_trl.reporting.paper`."""

from chimed_trl._compat import forward  # noqa: E402
from chimed_trl.reporting.evaluation import (  # noqa: F401  (deprecated path, kept for compatibility)
    headline_metrics,
    render_markdown,
    task_items,
    worst_items,
    write_report,
)
from chimed_trl.reporting.paper import comparison, paper_reference, placement  # noqa: F401  (deprecated path, kept)

__getattr__ = forward(
    __name__,
    (
        "chimed_trl.reporting.evaluation",
        "chimed_trl.reporting.paper",
        "chimed_trl.reporting.markdown",
        "chimed_trl.reporting.charts",
    ),
)
