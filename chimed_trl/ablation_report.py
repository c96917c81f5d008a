"""Deprecated path, kept for compatibility: the ablation report's driver is :mod:`chimed_trl.stages.ablation_report`."""

from chimed_trl.stages.ablation_report import (  # noqa: F401  (deprecated path, kept for compatibility)
    AblationReportArguments,
    build_report,
    curve,
    first_step_at,
    write_ablation_report,
)
