"""The reward-model head: one score per sequence, read by the ``score`` layer of a sequence classifier.

Checks run twice: on a directory before any weights are read (config and safetensors headers only), so a wrong
model fails fast; and on a loaded model (through DDP/DeepSpeed and PEFT wrappers) before training or scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from chimed_trl.errors import UserError


def head_size(path: Path) -> int | None:
    """The number of labels a saved model's ``config.json`` declares (None when it declares none)."""
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    if "num_labels" in config:
        return int(config["num_labels"])
    if "id2label" in config:
        return len(config["id2label"])
    return None


def _has_score_tensor(path: Path) -> bool:
    """Whether the saved weights hold a sequence-classification head (``score.weight``), read from headers only."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = json.loads(index.read_text())["weight_map"]
    else:
        names = []
        for weights in path.glob("*.safetensors"):
            with safe_open(weights, "pt") as f:
                names += list(f.keys())
    return any(name == "score.weight" or name.endswith(".score.weight") for name in names)


def check_reward_architecture(path: Path) -> None:
    """Full weights must be a sequence classifier: a causal LM would be scored by a randomly initialised head."""
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    architectures = config.get("architectures") or [""]
    if architectures[0].endswith("ForSequenceClassification") or _has_score_tensor(path):
        return
    raise UserError(
        f"reward model {path}: {architectures[0] or 'the model'} is a causal LM, not a reward model (it has no "
        "sequence-classification head; train one with recipes/reward.py)"
    )


def check_reward_dir(path: Path) -> bool:
    """A reward-model directory's config, before any weights load; True when it holds a LoRA adapter."""
    if not path.is_dir():
        raise UserError(f"reward model {path}: not a directory")
    if (path / "adapter_config.json").exists():
        task_type = json.loads((path / "adapter_config.json").read_text()).get("task_type")
        if task_type not in (None, "SEQ_CLS"):
            raise UserError(
                f"reward model {path}: adapter task_type is {task_type!r}; a reward adapter has task_type SEQ_CLS"
            )
        return True
    if head_size(path) not in (None, 1):
        raise UserError(
            f"reward model {path}: config.json has {head_size(path)} labels; a reward model has exactly one "
            "score (num_labels: 1)"
        )
    check_reward_architecture(path)
    return False


def reward_head(model: torch.nn.Module) -> torch.nn.Module:
    """The one-score head (``score``) of a sequence-classification model, through DDP and PEFT wrappers."""
    inner = model
    for _ in range(4):  # DDP/DeepSpeed .module, then PeftModel.base_model (LoraModel) .model
        if hasattr(inner, "score"):
            break
        inner = getattr(inner, "module", None) or getattr(inner, "base_model", None) or getattr(inner, "model", None)
        if inner is None:
            break
    head = getattr(inner, "score", None) if inner is not None else None
    if head is None:
        raise UserError(
            f"{type(model).__name__} has no `score` head: load the reward model with "
            "AutoModelForSequenceClassification (num_labels=1), e.g. "
            "chimed_trl.modeling.load.load_model(..., task='reward')"
        )
    return head


def check_reward_head(model: torch.nn.Module, where: str | None = None) -> None:
    """Refuse, at start, a model whose head is not a single score (a 2-class classifier is not a reward model)."""
    head = reward_head(model)
    layer = getattr(head, "original_module", head)  # PEFT's ModulesToSaveWrapper keeps the same shape
    out_features = getattr(layer, "out_features", getattr(getattr(layer, "weight", None), "shape", [None])[0])
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if out_features != 1 or num_labels not in (None, 1):
        name = f"reward model {where}" if where else "the reward model"
        raise UserError(
            f"{name}: its head gives {out_features} outputs (num_labels={num_labels}); a reward model needs a "
            "single score: load it with num_labels=1"
        )
