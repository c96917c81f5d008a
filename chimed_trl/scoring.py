"""Scoring (prompt, answer) pairs: reward-model scoring and reward callables.

A reward model is a one-score ``AutoModelForSequenceClassification`` (full weights, or a LoRA adapter
with ``task_type: SEQ_CLS`` beside its base). It is always fed through its OWN tokenizer and chat
template, which may differ from the policy's. Pairs are scored in batches sorted by length, so
padding stays small; the caller hands each rank its own shard.

Reward callables follow TRL's GRPO ``reward_funcs``: ``func(prompts, completions, **kwargs) -> list[float |
None]``, completions in TRL's conversational form (``[{"role": "assistant", "content": text}]``), extra
columns as keyword arguments, ``None`` meaning "no opinion on this answer" (left out of its weighted sum;
an answer no source has an opinion on gets no reward and is never kept). :class:`CombinedReward` adds the
reward model (one source, first) and the callables as ``sum(weight_i * reward_i)``, the ``reward_weights``
of TRL. A callable can be named by dotted path in YAML (``reward_funcs: [chimed_trl.scoring.repetition_penalty]``).
"""

from __future__ import annotations

import importlib
import logging
import math
import re
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


def check_scores(scores: Sequence, expected: int, where: str, allow_none: bool = False) -> list:
    """Floats, one per answer (``None`` kept where ``allow_none``), or one line naming ``where``."""
    try:
        scores = [None if s is None and allow_none else float(s) for s in scores]
    except (TypeError, ValueError) as err:
        raise UserError(f"{where} must return a list of numbers ({type(err).__name__}: {err})") from None
    if len(scores) != expected:
        raise UserError(f"{where} returned {len(scores)} scores for {expected} answers")
    bad = [s for s in scores if s is not None and not math.isfinite(s)]
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


# ----- reward callables (TRL GRPO style) ---------------------------------------------------------------
def import_reward_func(spec, key: str) -> Callable:
    """A callable, or one named by dotted path (``my_pkg.rules.length_penalty``); one line naming ``key`` if not."""
    if callable(spec):
        return spec
    module_name, _, name = str(spec).rpartition(".")
    if not module_name:
        raise UserError(f"{key}={spec!r}: expected a dotted path to a function (module.function)")
    try:  # any error importing the user's module (a SyntaxError, a failing import-time line) is the config's
        func = getattr(importlib.import_module(module_name), name)
    except Exception as err:
        raise UserError(f"{key}={spec!r}: cannot import it ({type(err).__name__}: {err})") from None
    if not callable(func):
        raise UserError(f"{key}={spec!r}: {type(func).__name__} is not callable")
    return func


def callable_name(func) -> str:
    from trl.trainer.utils import get_callable_name  # TRL's names, so logs read like GRPO's

    return get_callable_name(func)


class CombinedReward:
    """``reward(prompts, texts, **columns) -> (combined, per_source)``: a reward model and/or reward callables.

    ``combined[i] = sum(w_j * r_j[i])`` over the sources with an opinion on answer ``i`` (TRL's ``nansum``),
    ``None`` where no source has one. ``per_source`` maps each source's name to its values (``None`` kept).
    """

    def __init__(self, scorer=None, scorer_name: str = "reward_model", funcs=(), weights=None, ids=None, label=None):
        specs = list(funcs or [])
        self.funcs = [import_reward_func(f, f"reward_funcs[{i}]") for i, f in enumerate(specs)]
        self.scorer, self.tokenizer = scorer, ids  # ids: the policy tokenizer, for TRL's completion_ids
        self.label = label or scorer_name  # how errors name the reward model (its path or function name)
        names = ([scorer_name] if scorer is not None else []) + [callable_name(f) for f in self.funcs]
        if not names:
            raise UserError("no reward: give reward_model_path (a reward-model directory), a reward function or "
                            "reward_funcs")  # fmt: skip
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(names):
            raise UserError(
                f"reward_weights has {len(self.weights)} values for {len(names)} rewards ({', '.join(self.names)}; "
                "the reward model counts as one)"
            )
        if not all(math.isfinite(w) for w in self.weights):
            raise UserError(f"reward_weights={self.weights}: every weight must be a finite number")

    def __call__(self, prompts: list, texts: list[str], **columns) -> tuple[list[float | None], dict[str, list]]:
        values = []
        if self.scorer is not None:
            values.append(check_scores(self.scorer(prompts, texts), len(texts), f"reward {self.label}"))
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        if self.funcs and self.tokenizer is not None:
            columns["completion_ids"] = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        for name, func in zip(self.names[len(values) :], self.funcs):
            out = func(prompts=prompts, completions=completions, **columns)
            values.append(check_scores(out, len(texts), f"reward_funcs: {name}", allow_none=True))
        combined = []
        for i in range(len(texts)):
            opinions = [(w, v[i]) for w, v in zip(self.weights, values) if v[i] is not None]
            combined.append(sum(w * x for w, x in opinions) if opinions else None)
        return combined, dict(zip(self.names, values))


def completion_text(completion) -> str:
    """The text of one completion, in TRL's conversational form or as a plain string."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def repetition_penalty(prompts, completions, ngram_size: int = 2, **kwargs) -> list[float]:
    """Minus the share of repeated character n-grams of each answer: 0.0 for none, towards -1.0 for a loop.

    Characters, not words (Chinese has no spaces); catches the degenerate loops a sampled policy falls into
    (``"多喝水多喝水多喝水"``). An answer shorter than ``ngram_size`` scores 0.0.
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        grams = [text[i : i + ngram_size] for i in range(len(text) - ngram_size + 1)]
        rewards.append(-(len(grams) - len(set(grams))) / len(grams) if grams else 0.0)
    return rewards


TEMPLATE_LEAK = re.compile(r"<\|[a-z_]+\|>|</?s>|\[/?INST\]|^(user|assistant|system)\s*[:：]", re.MULTILINE)


def template_leak_penalty(prompts, completions, **kwargs) -> list[float]:
    """-1.0 for an empty answer or one that leaks chat-template markup (``<|im_start|>``, ``</s>``, a new turn
    such as ``user:``), else 0.0: such answers teach the policy to run past its turn."""
    texts = [completion_text(c) for c in completions]
    return [-1.0 if not t.strip() or TEMPLATE_LEAK.search(t) else 0.0 for t in texts]
