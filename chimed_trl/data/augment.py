"""Ranked-list records augmented with responders' answers: ids, positions, normalisation (the record handling).

``position`` is the number of the input's responses ranked *above* the answer: 0 = best of all,
1 (the default) = right after the human-accepted answer (between chosen and rejected for a pair),
``-1`` = right above the input's worst response, ``K`` = below all. Responders sharing a position
keep their configured order, which is the order of expected quality.

The augmentation stage itself (responders, output store, resume, metrics) is
:mod:`chimed_trl.stages.augment`; its names are still importable from here (deprecated path).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import TYPE_CHECKING

from chimed_trl._compat import forward
from chimed_trl.data.records import DataError

if TYPE_CHECKING:
    from chimed_trl.stages.augment import ResponderConfig


def record_id(record: dict) -> str:
    """A stable key of an input record: its prompt and input responses (not their labels)."""
    payload = json.dumps([record["prompt"], record["responses"]], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def normalise(text: str) -> str:
    """For the empty/duplicate checks: NFKC (full-width -> half-width), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def resolve_position(position: int | None, k: int) -> int:
    """How many of the K input responses rank above the answer (validated against K)."""
    position = 1 if position is None else position
    index = position if position >= 0 else k + position
    if not 0 <= index <= k:
        raise ValueError(f"position {position} is outside [-{k}, {k}] for a list of {k} responses")
    return index


def input_ranks(record: dict) -> list[int]:
    return list(record.get("ranks") or range(len(record["responses"])))


def insert_answers(record: dict, answers: list[tuple[ResponderConfig, str]], labels: list[str], where: str) -> dict:
    """The augmented record: each answer placed after ``position`` input responses, ties of the input kept."""
    k = len(record["responses"])
    slots: dict[int, list] = {}
    for responder, text in answers:  # config order = expected quality among answers at one slot
        try:
            slots.setdefault(resolve_position(responder.position, k), []).append((text, responder.name))
        except ValueError as e:
            raise DataError(where, "responses", f"responder {responder.name!r}: {e}") from None
    old_ranks = input_ranks(record)
    items: list[tuple[str, str, int | None]] = []  # (text, label, input rank or None for an answer)
    for i in range(k + 1):
        items += [(text, name, None) for text, name in slots.get(i, [])]
        if i < k:
            items.append((record["responses"][i], labels[i], old_ranks[i]))
    ranks, rank = [], 0
    for i, (_, _, old) in enumerate(items):
        if i and not (old is not None and items[i - 1][2] == old):
            rank += 1
        ranks.append(rank)
    for i in range(1, k):
        if old_ranks[i] == old_ranks[i - 1] and i in slots:
            raise DataError(where, "ranks", f"an answer at position {i} splits tied responses {i - 1} and {i}")
    out = {key: value for key, value in record.items() if key not in ("responses", "ranks", "sources")}
    out.update(responses=[t for t, _, _ in items], ranks=ranks, sources=[s for _, s, _ in items])
    return out


def with_system(prompt: list[dict], system_prompt: str | None) -> list[dict]:
    if not system_prompt or (prompt and prompt[0]["role"] == "system"):
        return prompt
    return [{"role": "system", "content": system_prompt}, *prompt]


def answer_problem(text: str, seen: set[str]) -> str | None:
    key = normalise(text)
    return "empty" if not key else "duplicate" if key in seen else None


# deprecated path (the whole augmentation stage lived here), kept for compatibility: the driver's names answer
# from where they live now, resolved lazily because chimed_trl.stages.augment imports this module
__getattr__ = forward(__name__, ("chimed_trl.stages.augment", "chimed_trl.stages.augment_responders"))


__all__ = [
    "answer_problem",
    "input_ranks",
    "insert_answers",
    "normalise",
    "record_id",
    "resolve_position",
    "with_system",
]
