"""Deprecated path, kept for compatibility: the reward stage's driver is :mod:`chimed_trl.stages.reward`."""

from chimed_trl.stages.reward import (  # noqa: F401  (deprecated path, kept for compatibility)
    HELDOUT,
    TRAIN_SAMPLE,
    RewardScriptArguments,
    check_sources,
    final_heldout_metrics,
    fixed_eval_sets,
    lora_config,
    summarize,
    train_reward,
)
