"""Scoring (prompt, answer) pairs with a reward model or a Python reward function.

A reward model is a one-score ``AutoModelForSequenceClassification`` (full weights, or a LoRA adapter
with ``task_type: SEQ_CLS`` beside its base). It is always fed through its OWN tokenizer and chat
template, which may differ from the policy's. Pairs are scored in batches sorted by length, so
padding stays small; the caller hands each rank its own shard.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from chimed_trl.errors import UserError
from chimed_trl.generation import as_messages
from chimed_trl.modeling.load import load_reward_model  # noqa: F401  (re-exported: its old home)
from chimed_trl.modeling.reward_head import check_reward_architecture, check_reward_head  # noqa: F401

logger = logging.getLogger(__name__)
RewardFunction = Callable[[list[list[dict]], list[str]], list[float]]


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


def build_scorer(
    reward_model, reward_processing_class=None, batch_size: int = 16, max_length: int = 2048, dtype="float32"
):
    """A path, a (model, tokenizer) pair, a loaded model + ``reward_processing_class``, or a Python function."""
    if isinstance(reward_model, str | Path):
        model, tokenizer = load_reward_model(reward_model, dtype=dtype)
        return RewardModelScorer(model, tokenizer, batch_size, max_length)
    if isinstance(reward_model, torch.nn.Module):
        if reward_processing_class is None:
            raise UserError("a reward model object needs its tokenizer: pass reward_processing_class")
        return RewardModelScorer(reward_model, reward_processing_class, batch_size, max_length)
    if callable(reward_model):
        return reward_model
    raise UserError(f"reward_model must be a path, a model or a function, got {type(reward_model).__name__}")
