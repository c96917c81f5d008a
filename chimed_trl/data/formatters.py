"""One formatter per raw schema: raw row -> canonical record(s). Registered by name.

A formatter is a ``convert(row, ctx)`` function returning a record, a list of records, or a
:class:`Skip` with a reason; it raises :class:`FieldError` for a missing or wrongly typed field and
the caller adds the file and line. File-shaped sources (HET-MC ``.dialog``, Safety-Prompts' JSON
keyed by category) also register a ``reader``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chimed_trl.data import readers
from chimed_trl.data.records import DataError


class FieldError(ValueError):
    """A problem with one field of a raw row; the caller knows the file and line."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass
class Context:
    path: Path | None = None  # the source file (CMMLU/C-Eval take the subject from its name)


@dataclass(frozen=True)
class Formatter:
    name: str
    format: str
    convert: Callable[[dict, Context], Any]
    reader: Callable[[Path, str | None], Iterator[tuple[str, dict]]] = readers.read_rows
    description: str = ""


FORMATTERS: dict[str, Formatter] = {}


def register(name: str, fmt: str, reader=None):
    def wrap(fn):
        FORMATTERS[name] = Formatter(name, fmt, fn, reader or readers.read_rows, (fn.__doc__ or "").strip())
        return fn

    return wrap


def get_formatter(name: str) -> Formatter:
    if name not in FORMATTERS:
        raise ValueError(f"Unknown formatter {name!r}: expected one of {', '.join(sorted(FORMATTERS))}")
    return FORMATTERS[name]


def field(row: dict, key: str, kind: type | tuple = str, optional: bool = False):
    if key not in row or row[key] is None:
        if optional:
            return None
        raise FieldError(key, "missing")
    value = row[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FieldError(key, f"expected {name}, got {type(value).__name__}")
    return value


def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _join(*parts: str | None) -> str:
    return "\n".join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------- canonical pass-through
for _fmt in ("text", "conversation", "ranked", "choice", "ner", "dialogue_eval", "scale_item"):
    FORMATTERS[_fmt] = Formatter(_fmt, _fmt, lambda row, ctx: row, readers.read_rows, f"canonical {_fmt} records")


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


# ---------------------------------------------------------------- multiple choice
def _subject_from_path(ctx: Context) -> str:
    if ctx.path is None:
        return ""
    return re.sub(r"_(val|dev|test|train)$", "", ctx.path.stem)


@register("cmmlu_csv", "choice")
def cmmlu_csv(row, ctx):
    """CMMLU CSV: `,Question,A,B,C,D,Answer` (first column is the row index); subject = file name."""
    options = {letter: field(row, letter) for letter in "ABCD"}
    index = row.get("") or row.get("Unnamed: 0") or ""
    subject = _subject_from_path(ctx)
    return {
        "id": f"{subject}-{index}",
        "subject": subject,
        "question": field(row, "Question"),
        "options": options,
        "answer": field(row, "Answer").strip(),
    }


@register("ceval", "choice")
def ceval(row, ctx):
    """C-Eval CSV: id,question,A,B,C,D,answer,explanation; subject = file name without _val/_dev/_test."""
    subject = _subject_from_path(ctx)
    answer = (row.get("answer") or "").strip()
    return {
        "id": f"{subject}-{field(row, 'id')}",
        "subject": subject,
        "question": field(row, "question"),
        "options": {letter: field(row, letter) for letter in "ABCD"},
        "answer": answer,  # empty on the test split: the validator rejects it, so use val/dev
    }


@register("medqa_mcmle", "choice")
def medqa_mcmle(row, ctx):
    """MedQA-MCMLE: {question, options: {A..E} or [{key, value}], answer_idx}."""
    options = field(row, "options", (dict, list))
    if isinstance(options, list):
        try:
            options = {o["key"]: o["value"] for o in options}
        except (TypeError, KeyError):
            raise FieldError("options", "expected a list of {key, value}") from None
    index = row.get("id", row.get("_index", ""))
    return {
        "id": str(index) if index != "" else "",
        "subject": row.get("meta_info") or "medqa_mcmle",
        "question": field(row, "question"),
        "options": {str(k): str(v) for k, v in options.items()},
        "answer": field(row, "answer_idx").strip(),
    }


# ---------------------------------------------------------------- NER
CCKS2019_TYPES = ("疾病和诊断", "影像检查", "实验室检验", "手术", "药物", "解剖部位")


@register("ccks2019", "ner")
def ccks2019(row, ctx):
    """CCKS-2019 (Yidu-S4K): {originalText, entities: [{label_type, start_pos, end_pos}]}, end exclusive."""
    text = field(row, "originalText")
    entities = []
    for i, entity in enumerate(field(row, "entities", list)):
        if not isinstance(entity, dict):
            raise FieldError(f"entities[{i}]", "expected an object")
        label = entity.get("label_type")
        if label not in CCKS2019_TYPES:
            raise FieldError(f"entities[{i}].label_type", f"unknown type {label!r}")
        start, end = entity.get("start_pos"), entity.get("end_pos")
        if not isinstance(start, int) or not isinstance(end, int):
            raise FieldError(f"entities[{i}].start_pos", "expected integer start_pos/end_pos")
        entities.append({"start": start, "end": end, "type": label})
    return {"id": str(row.get("id", "")), "text": text, "entities": entities}


def bio_to_spans(tags: list[str]) -> list[dict]:
    """Character BIO/BIOES tags -> spans (end exclusive). An I- without a B- starts a span (lenient)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix in ("O", "B", "S") or label != kind):
            spans.append({"start": start, "end": i, "type": kind})
            start, kind = None, None
        if prefix in ("B", "S") or (prefix in ("I", "M", "E") and start is None):
            start, kind = i, label
        if prefix in ("E", "S") and start is not None:
            spans.append({"start": start, "end": i + 1, "type": kind})
            start, kind = None, None
    return spans


@register("chimst", "ner")
def chimst(row, ctx):
    """ChiMST (access by agreement; schema assumed): {text, entities[{start,end,type}]} or {tokens, tags} BIO."""
    if "tokens" in row:
        tokens, tags = field(row, "tokens", list), field(row, "tags", list)
        if len(tokens) != len(tags):
            raise FieldError("tags", f"{len(tags)} tags for {len(tokens)} tokens")
        if any(not isinstance(t, str) or len(t) != 1 for t in tokens):
            raise FieldError("tokens", "expected one character per token")
        return {"id": str(row.get("id", "")), "text": "".join(tokens), "entities": bio_to_spans(tags)}
    entities = field(row, "entities", list)
    return {"id": str(row.get("id", "")), "text": field(row, "text"), "entities": entities}


# ---------------------------------------------------------------- attitude scales
@register("attitude_scale", "scale_item")
def attitude_scale(row, ctx):
    """CAMI/MICA items: {scale, item, text, subscale?}."""
    scale = field(row, "scale").strip().upper()
    record = {"scale": scale, "item": field(row, "item", int), "text": field(row, "text")}
    if row.get("subscale"):
        record["subscale"] = row["subscale"]
    return record
