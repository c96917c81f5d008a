"""Scoring (prompt, answer) pairs with a reward model or a Python reward function.

A reward model is a one-score ``AutoModelForSequenceClassification`` (full weights, or a LoRA adapter
with ``task_type: SEQ_CLS`` beside its base). It is always fed through its OWN tokenizer and chat
template, which may differ from the policy's. Pairs are scored in batches sorted by length, so
padding stays small; the caller hands each rank its own shard.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from chimed_trl.errors import UserError
from chimed_trl.generation import as_messages

logger = logging.getLogger(__name__)
RewardFunction = Callable[[list[list[dict]], list[str]], list[float]]


def _head_size(path: Path) -> int | None:
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


def check_reward_head(model, where: str) -> None:
    """A reward model gives ONE score per sequence; a 2-class classifier is not a reward model."""
    labels = getattr(model.config, "num_labels", None)
    if labels != 1:
        raise UserError(
            f"reward model {where}: its head gives {labels} scores per sequence; a reward model has exactly one "
            "(num_labels: 1, as the reward recipe saves it)"
        )


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer) from a reward-model directory: full weights, or a LoRA adapter (``adapter_config.json``).

    The head is checked from the config before any weights are read, so a wrong model fails fast.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"reward model {path}: not a directory")
    adapter = (path / "adapter_config.json").exists()
    base = path
    if adapter:
        adapter_config = json.loads((path / "adapter_config.json").read_text())
        if adapter_config.get("task_type") not in (None, "SEQ_CLS"):
            raise UserError(
                f"reward model {path}: adapter task_type is {adapter_config.get('task_type')!r}; "
                "a reward adapter has task_type SEQ_CLS"
            )
        base = Path(adapter_config["base_model_name_or_path"])
    elif _head_size(path) not in (None, 1):
        raise UserError(
            f"reward model {path}: config.json has {_head_size(path)} labels; a reward model has exactly one "
            "score (num_labels: 1)"
        )
    if not adapter:
        check_reward_architecture(path)
    tokenizer_dir = path if (path / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path)
    check_reward_head(model, str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


class RewardModelScorer:
    """``scorer(prompts, completions) -> list[float]`` with a sequence-classification reward model."""

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 2048):
        check_reward_head(model, type(model).__name__)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    def render(self, prompt, completion: str) -> str:
        messages = as_messages(prompt) + [{"role": "assistant", "content": completion}]
        if self.tokenizer.chat_template is None:  # a plain LM head turned into a scorer: role-tagged lines
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @torch.no_grad()
    def __call__(self, prompts: Sequence, completions: Sequence[str]) -> list[float]:
        from chimed_trl.trainers.listwise_reward import sequence_scores  # here: the trainers package imports us

        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][-self.max_length :] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        scores = [0.0] * len(ids)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0  # masked out
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # right padding: the score is read at the last real token
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            # pooled by the attention mask, as the reward model was trained (a final EOS equal to pad counts)
            chunk_scores, _ = sequence_scores(self.model, input_ids.to(device), mask.to(device))
            for row, i in enumerate(chunk):
                scores[i] = float(chunk_scores[row])
        return scores


def check_scores(scores: Sequence[float], expected: int, where: str) -> list[float]:
    scores = [float(s) for s in scores]
    if len(scores) != expected:
        raise UserError(f"{where} returned {len(scores)} scores for {expected} answers")
    bad = [s for s in scores if not math.isfinite(s)]
    if bad:
        raise UserError(f"{where} returned a non-finite score ({bad[0]})")
    return scores


def build_scorer(reward_model, reward_processing_class=None, batch_size: int = 16, max_length: int = 2048):
    """A path, a (model, tokenizer) pair, a loaded model + ``reward_processing_class``, or a Python function."""
    if isinstance(reward_model, str | Path):
        model, tokenizer = load_reward_model(reward_model)
        return RewardModelScorer(model, tokenizer, batch_size, max_length)
    if isinstance(reward_model, torch.nn.Module):
        if reward_processing_class is None:
            raise UserError("a reward model object needs its tokenizer: pass reward_processing_class")
        return RewardModelScorer(reward_model, reward_processing_class, batch_size, max_length)
    if callable(reward_model):
        return reward_model
    raise UserError(f"reward_model must be a path, a model or a function, got {type(reward_model).__name__}")
