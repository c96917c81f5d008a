"""Canonical record formats (see DESIGN.md) and their validators.

Every validator takes a record and a ``where`` string (``file:line``) and raises :class:`DataError`
naming the place and the field. They return nothing: a record either is canonical or is rejected.
"""

from __future__ import annotations

from typing import Any

from chimed_trl.errors import UserError

ROLES = ("system", "user", "assistant")
FORMATS = ("text", "conversation", "ranked", "choice", "ner", "dialogue_eval", "scale_item")


class DataError(UserError):
    """Bad input, with the place (file:line or row) and the field that is wrong."""

    def __init__(self, where: str, field: str | None, message: str):
        self.where, self.field = where, field
        prefix = f"{where}: field {field!r}: " if field else f"{where}: "
        super().__init__(prefix + message)


def _require(record: dict, key: str, kind: type | tuple[type, ...], where: str, prefix: str = "") -> Any:
    name = f"{prefix}{key}"
    if not isinstance(record, dict):
        raise DataError(where, prefix.rstrip(".") or None, f"expected an object, got {type(record).__name__}")
    if key not in record or record[key] is None:
        raise DataError(where, name, "missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(where, name, f"expected {expected}, got {type(value).__name__}")
    return value


def validate_messages(messages: Any, where: str, field: str = "messages", need_assistant: bool = True) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(where, field, "expected a non-empty list of messages")
    for i, message in enumerate(messages):
        prefix = f"{field}[{i}]."
        role = _require(message, "role", str, where, prefix)
        if role not in ROLES:
            raise DataError(where, prefix + "role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        _require(message, "content", str, where, prefix)
        if role == "system" and i != 0:
            raise DataError(where, prefix + "role", "a system message may only come first")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError(where, field, "conversation has no assistant turn")


def validate_text(record: dict, where: str) -> None:
    _require(record, "text", str, where)


def validate_conversation(record: dict, where: str) -> None:
    messages = record.get("messages") if isinstance(record, dict) else None
    validate_messages(messages, where)
    if messages[-1]["role"] != "assistant":
        raise DataError(
            where,
            f"messages[{len(messages) - 1}].role",
            f"a training conversation must end with an assistant turn, this one ends with {messages[-1]['role']!r} "
            "(nothing would be learned from it): drop the trailing turn",
        )


def validate_ranked(record: dict, where: str) -> None:
    validate_messages(_require(record, "prompt", list, where), where, "prompt", need_assistant=False)
    responses = _require(record, "responses", list, where)
    if len(responses) < 2:
        raise DataError(where, "responses", f"a ranked record needs at least 2 responses, got {len(responses)}")
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            raise DataError(where, f"responses[{i}]", f"expected str, got {type(response).__name__}")
    if len(set(responses)) != len(responses):
        raise DataError(where, "responses", "duplicate responses")
    for key in ("ranks", "sources"):
        if record.get(key) is not None:
            values = _require(record, key, list, where)
            if len(values) != len(responses):
                raise DataError(where, key, f"has {len(values)} entries for {len(responses)} responses")
    if record.get("ranks") is not None:
        ranks = record["ranks"]
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            raise DataError(where, "ranks", "expected integers (lower is better)")
        if any(r < 0 for r in ranks):
            raise DataError(where, "ranks", f"ranks must be >= 0 (lower is better), got {ranks}")
        if ranks != sorted(ranks):
            raise DataError(where, "ranks", "responses must be listed best first (ranks non-decreasing)")
        if len(set(ranks)) == 1:
            raise DataError(where, "ranks", "all responses are tied: nothing to learn from this list")


def validate_choice(record: dict, where: str) -> None:
    for key in ("id", "subject", "question", "answer"):
        _require(record, key, str, where)
    options = _require(record, "options", dict, where)
    if len(options) < 2:
        raise DataError(where, "options", f"a question needs at least 2 options, got {len(options)}")
    for letter, text in options.items():
        if not isinstance(text, str):
            raise DataError(where, f"options.{letter}", f"expected str, got {type(text).__name__}")
        if not text.strip():
            raise DataError(where, f"options.{letter}", "empty option text")
    if record["answer"] not in options:
        raise DataError(where, "answer", f"answer {record['answer']!r} is not among the options {sorted(options)}")


def validate_ner(record: dict, where: str) -> None:
    _require(record, "id", str, where)
    text = _require(record, "text", str, where)
    for i, entity in enumerate(_require(record, "entities", list, where)):
        prefix = f"entities[{i}]."
        start = _require(entity, "start", int, where, prefix)
        end = _require(entity, "end", int, where, prefix)
        _require(entity, "type", str, where, prefix)
        if not 0 <= start < end <= len(text):
            raise DataError(where, f"entities[{i}]", f"span [{start}, {end}) is outside the text (length {len(text)})")


def validate_dialogue_eval(record: dict, where: str) -> None:
    _require(record, "id", str, where)
    validate_messages(_require(record, "messages", list, where), where, need_assistant=False)
    _require(record, "reference", str, where)


def validate_scale_item(record: dict, where: str) -> None:
    scale = _require(record, "scale", str, where)
    if scale not in ("CAMI", "MICA"):
        raise DataError(where, "scale", f"unknown scale {scale!r} (expected CAMI or MICA)")
    _require(record, "item", int, where)
    _require(record, "text", str, where)


VALIDATORS = {
    "text": validate_text,
    "conversation": validate_conversation,
    "ranked": validate_ranked,
    "choice": validate_choice,
    "ner": validate_ner,
    "dialogue_eval": validate_dialogue_eval,
    "scale_item": validate_scale_item,
}


def validate(record: dict, fmt: str, where: str) -> None:
    if fmt not in VALIDATORS:
        raise ValueError(f"Unknown record format {fmt!r}: expected one of {', '.join(FORMATS)}")
    VALIDATORS[fmt](record, where)


def record_text(record: dict) -> str:
    """All the text of a record, for de-duplication and length statistics."""
    if "text" in record and isinstance(record["text"], str) and "entities" not in record:
        return record["text"]
    parts: list[str] = []
    for key in ("messages", "prompt"):
        parts += [m["content"] for m in record.get(key) or []]
    parts += record.get("responses") or []
    if "question" in record:
        parts += [record["question"], *record.get("options", {}).values()]
    if "reference" in record:
        parts.append(record["reference"])
    if "entities" in record:
        parts.append(record["text"])
    return "\n".join(parts)


def is_empty(record: dict, fmt: str) -> str | None:
    """The reason a record is empty (to be skipped and counted), or None."""
    if fmt == "text" and not record["text"].strip():
        return "empty text"
    if fmt in ("conversation", "dialogue_eval") and any(not m["content"].strip() for m in record["messages"]):
        return "empty message"
    if fmt == "ranked" and any(not r.strip() for r in record["responses"]):
        return "empty response"
    if fmt == "dialogue_eval" and not record["reference"].strip():
        return "empty reference"
    return None
