"""Training corpora: CMD (shibing624/medical), Toyhom, ShareGPT conversations and preferences, ChiMed QA."""

from __future__ import annotations

from typing import Any

from chimed_trl.data.formatters.base import FieldError, Skip, _assistant, _join, _user, field, register


# ---------------------------------------------------------------- CMD (shibing624/medical)
@register("cmd_pretrain", "text")
def cmd_pretrain(row, ctx):
    """shibing624/medical `pretrain`: {text}."""
    return {"text": field(row, "text")}


@register("cmd_sft", "conversation")
def cmd_sft(row, ctx):
    """shibing624/medical `finetune`: {instruction, input, output}."""
    prompt = _join(field(row, "instruction"), field(row, "input", optional=True))
    return {"messages": [_user(prompt), _assistant(field(row, "output"))]}


@register("cmd_reward", "ranked")
def cmd_reward(row, ctx):
    """shibing624/medical `reward`: {question, response_chosen, response_rejected} -> K=2."""
    chosen, rejected = field(row, "response_chosen"), field(row, "response_rejected")
    if chosen.strip() == rejected.strip():
        raise FieldError("response_rejected", "identical to response_chosen")
    return {
        "prompt": [_user(field(row, "question"))],
        "responses": [chosen, rejected],
        "ranks": [0, 1],
        "sources": ["chosen", "rejected"],
    }


# ---------------------------------------------------------------- Toyhom
@register("toyhom_csv", "conversation")
def toyhom_csv(row, ctx):
    """Toyhom Chinese-medical-dialogue-data CSV: department,title,ask,answer (GB18030)."""
    title, ask = field(row, "title"), field(row, "ask")
    # `ask` often repeats the title, or is the placeholder "无"; keep the more informative text.
    question = ask if ask.strip() and ask.strip() != "无" else title
    if title.strip() and title.strip() not in question:
        question = _join(title, question)
    return {"messages": [_user(question), _assistant(field(row, "answer"))]}


# ---------------------------------------------------------------- ShareGPT
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _sharegpt_messages(turns: Any, key: str = "conversations") -> list[dict]:
    if not isinstance(turns, list):
        raise FieldError(key, f"expected a list, got {type(turns).__name__}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FieldError(f"{key}[{i}]", "expected an object with from/value")
        role = turn.get("from")
        if role not in _SHAREGPT_ROLES:
            raise FieldError(f"{key}[{i}].from", f"unknown speaker {role!r} (expected human, gpt or system)")
        value = turn.get("value")
        if not isinstance(value, str):
            raise FieldError(f"{key}[{i}].value", "missing or not a string")
        messages.append({"role": _SHAREGPT_ROLES[role], "content": value})
    return messages


@register("sharegpt", "conversation")
def sharegpt(row, ctx):
    """ShareGPT: {conversations: [{from: human|gpt|system, value}]}."""
    return {"messages": _sharegpt_messages(field(row, "conversations", list))}


def _response(row: dict, key: str) -> str:
    value = row.get(key)
    if isinstance(value, dict):  # some dumps store {from, value}
        value = value.get("value")
    if not isinstance(value, str):
        raise FieldError(key, "missing or not a string")
    return value


@register("sharegpt_preference", "ranked")
def sharegpt_preference(row, ctx):
    """ShareGPT preference: {conversations (prompt), chosen, rejected}."""
    prompt = _sharegpt_messages(field(row, "conversations", list))
    chosen, rejected = _response(row, "chosen"), _response(row, "rejected")
    if chosen.strip() == rejected.strip():
        raise FieldError("rejected", "identical to chosen")
    return {"prompt": prompt, "responses": [chosen, rejected], "ranks": [0, 1], "sources": ["chosen", "rejected"]}


# ---------------------------------------------------------------- ChiMed
def _chimed_answers(row) -> list[tuple[str, bool]]:
    answers = []
    for i in range(1, 20):
        key = f"answer_{i}"
        if key not in row:
            break
        text = field(row, key)
        adopted = row.get(f"adopted_{i}", False)
        if isinstance(adopted, str):
            adopted = adopted.strip().lower() in ("1", "true", "yes", "是", "已采纳")
        answers.append((text, bool(adopted)))
    if not answers:
        raise FieldError("answer_1", "missing")
    return answers


@register("chimed_qa", "conversation")
def chimed_qa(row, ctx):
    """ChiMed QA: {question, answer_1, answer_2, adopted_1, adopted_2, ...}: question + adopted (else first) answer."""
    answers = _chimed_answers(row)
    best = next((text for text, adopted in answers if adopted), answers[0][0])
    return {"messages": [_user(field(row, "question")), _assistant(best)]}


@register("chimed_qa_ranked", "ranked")
def chimed_qa_ranked(row, ctx):
    """ChiMed QA as preferences: adopted answer > a non-adopted one; rows without that contrast are skipped."""
    answers = _chimed_answers(row)
    adopted = [t for t, a in answers if a]
    others = [t for t, a in answers if not a and t.strip() not in {x.strip() for x in adopted}]
    if not adopted or not others:
        return Skip("no adopted/non-adopted pair")
    return {
        "prompt": [_user(field(row, "question"))],
        "responses": [adopted[0], others[0]],
        "ranks": [0, 1],
        "sources": ["adopted", "not_adopted"],
    }
