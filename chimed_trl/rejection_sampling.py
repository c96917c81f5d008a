"""Deprecated path, kept for compatibility: the rejection-sampling driver is :mod:`chimed_trl.stages.rejection_sampling`."""

from chimed_trl.stages.rejection_sampling import (  # noqa: F401  (deprecated path, kept for compatibility)
    DATA_STATS,
    RejectionSamplingScriptArguments,
    load_prompts,
    prompt_row,
    run_rejection_sampling,
)
