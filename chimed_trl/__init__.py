"""chimed-trl: the ChiMed-GPT training regime as TRL recipes.

Public names are imported lazily so that ``import chimed_trl`` stays cheap (no torch until used).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ChimedSFTTrainer": "chimed_trl.trainers",
    "ListwiseRewardConfig": "chimed_trl.trainers",
    "ListwiseRewardTrainer": "chimed_trl.trainers",
    "RewardScriptArguments": "chimed_trl.stages.reward",
    "train_reward": "chimed_trl.stages.reward",
    "merge_adapter": "chimed_trl.modeling.merge",
    "ChimedScriptArguments": "chimed_trl.configs",
    "RejectionSamplingConfig": "chimed_trl.trainers",
    "RejectionSamplingTrainer": "chimed_trl.trainers",
    "ChimedModelConfig": "chimed_trl.configs",
    "AugmentArguments": "chimed_trl.stages.augment",
    "SourceConfig": "chimed_trl.data.sources",
    "augment_rankings": "chimed_trl.stages.augment",
    "build_mixture": "chimed_trl.data.mixtures",
    "load_records": "chimed_trl.data.sources",
    "build_tiny": "chimed_trl.tiny",
    "get_chat_template": "chimed_trl.templates",
    "load_model": "chimed_trl.modeling.load",
    "load_tokenizer": "chimed_trl.modeling.load",
    "train_lm": "chimed_trl.stages.lm",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'chimed_trl' has no attribute {name!r}")
