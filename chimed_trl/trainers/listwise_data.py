"""Ranked lists as the listwise reward trainer sees them: tokenized per response (with the over-length rules),
then collated into one batch of ``sum(K_b)`` sequences. Beside :mod:`chimed_trl.trainers.listwise_reward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad

from chimed_trl.data.records import validate_ranked
from chimed_trl.errors import UserError

PREPARED = "response_ids"


@dataclass
class DataCollatorForRankedResponses(DataCollatorMixin):
    """Flattens B lists of K_b tokenized responses into one batch of ``sum(K_b)`` sequences.

    Returns ``ranks`` and ``source_ids`` ``[B, K_max]`` (``-1`` pads a shorter list), ``group_sizes`` ``[B]``,
    ``input_ids``/``attention_mask`` ``[sum(K_b), L]`` in list order (list 0's responses first), and ``margin`` ``[B]``
    when the examples have one. Row ``n`` of ``input_ids`` belongs to the ``n``-th non-negative entry of ``ranks`` read
    row by row.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sequences = [torch.tensor(ids) for example in examples for ids in example[PREPARED]]
        ranks = [torch.tensor(example["ranks"]) for example in examples]
        sources = [torch.tensor(example.get("source_ids") or [-1] * len(example["ranks"])) for example in examples]
        # `ranks` first: Trainer takes the batch size (for eval loss bookkeeping) from the first tensor
        output = {
            "ranks": pad(ranks, padding_value=-1),
            "source_ids": pad(sources, padding_value=-1),
            "group_sizes": torch.tensor([len(example["ranks"]) for example in examples]),
            "input_ids": pad(sequences, self.pad_token_id, self.padding_side, self.pad_to_multiple_of),
            "attention_mask": pad(
                [torch.ones_like(s) for s in sequences], 0, self.padding_side, self.pad_to_multiple_of
            ),
        }
        if examples[0].get("margin") is not None:
            output["margin"] = torch.tensor([float(example["margin"]) for example in examples])
        return output


# ---- tokenization (a module-level function so that datasets can fingerprint and multiprocess it) -----------------
def as_ranked(example: dict) -> dict:
    """A ranked view of a ranked record or a TRL preference row (chosen/rejected as K=2)."""
    if example.get("responses") is not None:
        responses = list(example["responses"])
        ranks = example.get("ranks")
        ranks = list(range(len(responses))) if ranks is None else list(ranks)
        return {
            "prompt": example.get("prompt"),
            "responses": responses,
            "ranks": ranks,
            "sources": example.get("sources"),
        }
    if example.get("chosen") is None or example.get("rejected") is None:
        raise UserError("a reward dataset needs `responses` (ranked records) or `chosen` and `rejected` columns")
    chosen, rejected, prompt = example["chosen"], example["rejected"], example.get("prompt")
    if isinstance(chosen, list):  # conversational: the last assistant message is the response
        prompt = (prompt or []) + chosen[:-1]
        chosen, rejected = chosen[-1]["content"], rejected[-1]["content"]
    return {"prompt": prompt, "responses": [chosen, rejected], "ranks": [0, 1], "sources": None}


def _token_ids(tokenizer, prompt, response: str) -> list[int]:
    if isinstance(prompt, list):
        messages = prompt + [{"role": "assistant", "content": response}]
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    text = (prompt or "") + response
    if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token  # as TRL does for non-conversational preference data
    return list(tokenizer(text=text)["input_ids"])


def _prompt_ids(tokenizer, prompt) -> list[int]:
    """The prompt's tokens as they start every prompt+response sequence (chat: up to the assistant header)."""
    if isinstance(prompt, list):
        out = tokenizer.apply_chat_template(prompt, tokenize=True, return_dict=True, add_generation_prompt=True)
        return list(out["input_ids"])
    return list(tokenizer(text=prompt or "")["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_ranked(example, index, tokenizer, max_length, over_length, source_index, where):
    ranked = as_ranked(example)
    here = f"{where} row {index}"
    prompt = ranked["prompt"]
    check = dict(ranked, prompt=prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt or ""}])
    validate_ranked(check, here)
    sources = ranked["sources"] or [None] * len(ranked["responses"])
    kept, n_truncated, n_dropped, prompt_ids = [], 0, 0, None
    for response, rank, source in zip(ranked["responses"], ranked["ranks"], sources):
        ids, cut = _token_ids(tokenizer, prompt, response), False
        if max_length is not None and len(ids) > max_length:
            if over_length == "drop":
                n_dropped += 1
                continue
            if prompt_ids is None:
                prompt_ids = _prompt_ids(tokenizer, prompt)
            if max_length <= _common_prefix(ids, prompt_ids):  # nothing of the response survives the cut
                n_dropped += 1
                continue
            ids, cut = ids[:max_length], True
        if any(ids == other for other, _, _ in kept):  # truncated to the same tokens as an earlier kept response
            n_dropped += 1
            continue
        n_truncated += cut
        kept.append((ids, rank, source_index.get(source, -1)))
    keep = len(kept) >= 2 and len({rank for _, rank, _ in kept}) > 1
    if not kept:
        kept = [([], 0, -1)]  # a dropped row still needs typed columns
    return {
        PREPARED: [ids for ids, _, _ in kept],
        "ranks": [rank for _, rank, _ in kept],
        "source_ids": [s for _, _, s in kept],
        "margin": float(example["margin"]) if example.get("margin") is not None else None,
        "keep": keep,
        "n_truncated": n_truncated,
        "n_dropped": n_dropped,
    }
