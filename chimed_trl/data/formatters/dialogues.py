"""Multi-turn dialogue sources with file shapes of their own: HET-MC ``.dialog``, MedDialog-zh, Safety-Prompts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from chimed_trl.data import readers
from chimed_trl.data.formatters.base import FORMATTERS, FieldError, Formatter, Skip, _assistant, _user, field, register
from chimed_trl.data.records import DataError


# ---------------------------------------------------------------- HET-MC (.dialog)
def read_het_mc(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """Dialogue blocks: `id\\t<id>\\tapartment\\t<dept>\\tdisease\\t<name>`, `P|D\\t<text>\\t<label>` lines,
    and `SUM1`/`SUM2.x` summary lines (kept on the row, not used in conversations)."""
    block: dict | None = None
    for line_no, line in readers._decoded_lines(Path(path), encoding):
        line = line.rstrip("\r\n")
        if not line.strip():
            if block:
                yield block.pop("_where"), block
            block = None
            continue
        cols = line.split("\t")
        if cols[0] == "id":
            if block:
                yield block.pop("_where"), block
            meta = dict(zip(cols[0::2], cols[1::2]))
            block = {"_where": f"{path}:{line_no}", "id": meta.get("id", ""), "department": meta.get("apartment", "")}
            block.update(disease=meta.get("disease", ""), turns=[])
        elif cols[0] in ("P", "D"):
            if block is None:
                raise DataError(f"{path}:{line_no}", None, "utterance before any `id` header line")
            if len(cols) < 2:
                raise DataError(f"{path}:{line_no}", None, "expected `P|D<TAB>text<TAB>label`")
            block["turns"].append({"speaker": cols[0], "text": cols[1], "line": line_no})
        elif cols[0].startswith("SUM"):  # SUM1: the patient's question summary; SUM2.x: the doctor's
            if block is None:
                raise DataError(f"{path}:{line_no}", None, "summary line before any `id` header line")
            block.setdefault("summaries", {})[cols[0]] = cols[1] if len(cols) > 1 else ""
        else:
            raise DataError(f"{path}:{line_no}", None, f"unknown line type {cols[0]!r} (expected id, P or D)")
    if block:
        yield block.pop("_where"), block


def _merge_turns(turns: list[dict], patient: str, doctor: str) -> list[dict]:
    """Patient -> user, doctor -> assistant; consecutive turns of one speaker merged (newline-joined)."""
    messages: list[dict] = []
    for turn in turns:
        role = "user" if turn["speaker"] == patient else "assistant" if turn["speaker"] == doctor else None
        if role is None:
            raise FieldError("speaker", f"unknown speaker {turn['speaker']!r}")
        text = turn["text"].strip()
        if not text:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + text
        else:
            messages.append({"role": role, "content": text})
    return messages


@register("het_mc", "conversation", reader=read_het_mc)
def het_mc(row, ctx):
    """HET-MC (MC) dialogues -> conversation (patient = user, doctor = assistant)."""
    messages = _merge_turns(row["turns"], "P", "D")
    while messages and messages[0]["role"] == "assistant":  # a greeting before the patient speaks
        messages.pop(0)
    if not any(m["role"] == "assistant" for m in messages):
        return Skip("no doctor turn")
    while messages[-1]["role"] == "user":  # trailing patient turns have no answer to train on
        messages.pop()
    return {"messages": messages}


@register("het_mc_eval", "dialogue_eval", reader=read_het_mc)
def het_mc_eval(row, ctx):
    """HET-MC -> dialogue-eval: the context up to the last doctor turn; that turn is the reference."""
    messages = _merge_turns(row["turns"], "P", "D")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        return Skip("no doctor turn with context")
    return {"id": str(row["id"]), "messages": messages[:last], "reference": messages[last]["content"]}


# ---------------------------------------------------------------- MedDialog-CN
_SPEAKER_PREFIX = re.compile(r"^\s*(病人|患者|医生)\s*[：:]\s*")


@register("meddialog_zh", "conversation")
def meddialog_zh(row, ctx):
    """MedDialog-CN: processed {utterances: ["病人：...", "医生：..."]} or raw {dialogue_turns: [{speaker, utterance}]}."""
    turns = []
    if "utterances" in row:
        for i, utterance in enumerate(field(row, "utterances", list)):
            if not isinstance(utterance, str):
                raise FieldError(f"utterances[{i}]", "expected str")
            match = _SPEAKER_PREFIX.match(utterance)
            if not match:
                raise FieldError(f"utterances[{i}]", "expected a 病人：/医生： prefix")
            speaker = "D" if match.group(1) == "医生" else "P"
            turns.append({"speaker": speaker, "text": utterance[match.end() :]})
    elif "dialogue_turns" in row:
        for i, turn in enumerate(field(row, "dialogue_turns", list)):
            if not isinstance(turn, dict) or not isinstance(turn.get("utterance"), str):
                raise FieldError(f"dialogue_turns[{i}]", "expected {speaker, utterance}")
            speaker = str(turn.get("speaker", "")).strip().rstrip("：:")
            if speaker not in ("病人", "患者", "医生"):
                raise FieldError(f"dialogue_turns[{i}].speaker", f"unknown speaker {speaker!r}")
            turns.append({"speaker": "D" if speaker == "医生" else "P", "text": turn["utterance"]})
    else:
        raise FieldError("utterances", "missing (expected `utterances` or `dialogue_turns`)")
    messages = _merge_turns(turns, "P", "D")
    while messages and messages[0]["role"] == "assistant":
        messages.pop(0)
    while messages and messages[-1]["role"] == "user":
        messages.pop()
    if not messages:
        return Skip("no doctor turn")
    return {"messages": messages}


def read_meddialog(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """processed.zh files are JSON arrays of utterance lists; wrap bare lists as {utterances}."""
    path = Path(path)
    if path.suffix in (".jsonl",):
        yield from readers.read_jsonl(path, encoding)
        return
    data = readers.read_json(path, encoding)
    for i, item in enumerate(data if isinstance(data, list) else [data]):
        yield f"{path}[{i}]", item if isinstance(item, dict) else {"utterances": item}


FORMATTERS["meddialog_zh"] = Formatter(
    "meddialog_zh", "conversation", meddialog_zh, read_meddialog, meddialog_zh.__doc__
)


# ---------------------------------------------------------------- Safety-Prompts
def read_safety_prompts(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """thu-coai/Safety-Prompts: a JSON object keyed by category, each a list of {prompt, response, type}."""
    path = Path(path)
    data = readers.read_json(path, encoding)
    if isinstance(data, list):
        data = {"": data}
    if not isinstance(data, dict):
        raise DataError(str(path), None, "expected a JSON object keyed by category")
    for category, rows in data.items():
        if not isinstance(rows, list):
            raise DataError(f"{path}[{category}]", None, "expected a list of records")
        for i, row in enumerate(rows):
            yield f"{path}[{category}][{i}]", row if isinstance(row, dict) else {"_bad": row}


@register("safety_prompts", "conversation", reader=read_safety_prompts)
def safety_prompts(row, ctx):
    """Safety-Prompts: {prompt, response, type} -> conversation."""
    return {"messages": [_user(field(row, "prompt")), _assistant(field(row, "response"))]}
