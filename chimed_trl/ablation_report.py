"""Deprecated path, kept for compatibility: the ablation report's driver is :mod:`chimed_trl.stages.ablation_report`."""

from chimed_trl._compat import forward  # noqa: E402
from chimed_trl.stages.ablation_report import (  # noqa: F401  (deprecated path, kept for compatibility)
    AblationReportArguments,
    build_report,
    curve,
    first_step_at,
    write_ablation_report,
)

__getattr__ = forward(
    __name__,
    (
        "chimed_trl.stages.ablation_report",
        "chimed_trl.reporting.ablation",
        "chimed_trl.reporting.markdown",
        "chimed_trl.reporting.charts",
    ),
)
