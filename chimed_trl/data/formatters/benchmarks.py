"""Evaluation benchmarks: multiple choice (CMMLU, C-Eval, MedQA-MCMLE), NER (CCKS-2019, ChiMST), attitude scales."""

from __future__ import annotations

import re

from chimed_trl.data.formatters.base import Context, FieldError, field, register


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
