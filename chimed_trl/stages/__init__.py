"""One driver per stage of the regime, what ``recipes/<recipe>.py`` calls and what the pipeline runs.

Each stage module (``pretrain``, ``sft``, ``augment``, ``reward``, ``rejection_sampling``, ``evaluate``,
``ablation_report``) holds ``ARGUMENT_TYPES`` (the dataclasses its YAML is parsed into) and ``main(...)``, and
runs as ``python -m chimed_trl.stages.<stage> --config ...`` exactly as its recipe script does. The shared
bookkeeping (:func:`~chimed_trl.stages._run.guarded_run`) lives in ``_run``. Names are resolved lazily so that
importing one stage does not import every other stage's dependencies.
"""

from __future__ import annotations

import importlib

# deprecated paths (chimed_trl.stages was one module: train_lm and its helpers), kept for compatibility
_EXPORTS = {
    "train_lm": "chimed_trl.stages.lm",
    "check_stage": "chimed_trl.stages.lm",
    "loss_history": "chimed_trl.stages.lm",
    "summarize": "chimed_trl.stages.lm",
    "STAGE_FORMAT": "chimed_trl.stages.lm",
    "guarded_run": "chimed_trl.stages._run",
    "run_stage": "chimed_trl.stages._run",
    "setup_logging": "chimed_trl.stages._run",
    "log_to_file": "chimed_trl.stages._run",
    "close_log": "chimed_trl.stages._run",
    "LogToFile": "chimed_trl.stages._run",
    "TRAIN_LOG": "chimed_trl.stages._run",
    "TRAIN_LOG_LOGGER": "chimed_trl.stages._run",
}
# a pipeline's `recipe:` name -> its stage module (recipes/augment_rewards.py is the augment stage)
STAGES = {
    "pretrain": "pretrain",
    "sft": "sft",
    "augment_rewards": "augment",
    "augment": "augment",
    "reward": "reward",
    "rejection_sampling": "rejection_sampling",
    "evaluate": "evaluate",
    "ablation_report": "ablation_report",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'chimed_trl.stages' has no attribute {name!r}")
