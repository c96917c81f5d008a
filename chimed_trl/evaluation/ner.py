"""Few-shot NER (CCKS-2019, ChiMST) by generation: one ``mention<TAB>type`` per output line.

Scoring as the paper did: micro precision/recall/F1 over the set of (mention, type) pairs of each
document. Also offset-strict F1: each predicted mention is located in the text (every occurrence)
and compared with the gold (start, end, type) spans. Lines that do not parse are counted, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# Mention and type are split like the authors split their outputs: on any whitespace (tab, space, several);
# a colon is also accepted. The type is the last field, so a mention may itself contain spaces ("COVID 19").
_SEPARATORS = re.compile(r"\s*[：:]\s*|\s+")
# List numbering a model adds: "1. ", "2、", "(3) ", "4) ".
_NUMBERING = re.compile(r"^(?:\d+\s*[.、)）]|[(（]\d+[)）])\s*")


def format_entities(record: dict) -> str:
    return "\n".join(f"{record['text'][e['start'] : e['end']]}\t{e['type']}" for e in record["entities"])


def build_prompt(record: dict, exemplars: Sequence[dict], types: Sequence[str]) -> str:
    header = (
        f"请从文本中抽取医学实体，实体类型包括：{'、'.join(types)}。"
        "每行输出一个实体，格式为“实体<TAB>类型”；没有实体时输出“无”。"
    )
    blocks = [f"文本：{e['text']}\n实体：\n{format_entities(e) or '无'}" for e in exemplars]
    blocks.append(f"文本：{record['text']}\n实体：\n")
    return header + "\n\n" + "\n\n".join(blocks)


def parse_entities(output: str, types: Sequence[str]) -> tuple[set[tuple[str, str]], int]:
    """(set of (mention, type), number of unparsable lines). Stops at the next ``文本：`` block."""
    found, bad = set(), 0
    for line in output.split("文本：")[0].splitlines():
        line = _NUMBERING.sub("", line.strip().lstrip("-*• ").strip())
        if not line or line in ("无", "实体：", "实体:"):
            continue
        parts = _split_mention_type(line)
        if parts and parts[1] in types:
            found.add(parts)
        else:
            bad += 1
    return found, bad


def _split_mention_type(line: str) -> tuple[str, str] | None:
    """(mention, type) split at the last separator, or None when the line has none."""
    separators = list(_SEPARATORS.finditer(line))
    if not separators:
        return None
    last = separators[-1]
    mention, kind = line[: last.start()].strip(), line[last.end() :].strip()
    return (mention, kind) if mention and kind else None


def _prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "tp": tp,
        "pred": n_pred,
        "gold": n_gold,
    }


def locate(text: str, mention: str) -> set[tuple[int, int]]:
    return {(m.start(), m.start() + len(mention)) for m in re.finditer(re.escape(mention), text)} if mention else set()


def score_ner(records: Sequence[dict], predictions: Sequence[set[tuple[str, str]]]) -> dict:
    """Micro P/R/F1 over sets: a gold mention listed twice counts once; nothing predicted gives P = 0."""
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} NER outputs for {len(records)} records")
    tp = n_pred = n_gold = 0
    s_tp = s_pred = s_gold = 0
    for record, pred in zip(records, predictions, strict=True):
        gold = {(record["text"][e["start"] : e["end"]], e["type"]) for e in record["entities"]}
        tp, n_pred, n_gold = tp + len(gold & pred), n_pred + len(pred), n_gold + len(gold)
        gold_spans = {(e["start"], e["end"], e["type"]) for e in record["entities"]}
        pred_spans = {(a, b, t) for mention, t in pred for a, b in locate(record["text"], mention)}
        s_tp, s_pred, s_gold = s_tp + len(gold_spans & pred_spans), s_pred + len(pred_spans), s_gold + len(gold_spans)
    return {"mention_type": _prf(tp, n_pred, n_gold), "offset_strict": _prf(s_tp, s_pred, s_gold)}


def evaluate_ner(
    generate: Callable[[list[str]], list[str]],
    records: Sequence[dict],
    train_records: Sequence[dict],
    types: Sequence[str],
    k_shot: int = 3,
) -> dict:
    exemplars = list(train_records[:k_shot])
    outputs = generate([build_prompt(r, exemplars, types) for r in records])
    if len(outputs) != len(records):  # a backend that drops or adds outputs must not be scored by zip truncation
        raise ValueError(f"the generator returned {len(outputs)} outputs for {len(records)} NER records")
    parsed = [parse_entities(o, types) for o in outputs]
    result = score_ner(records, [p for p, _ in parsed])
    result.update(documents=len(records), k_shot=k_shot, unparsable_lines=sum(b for _, b in parsed))
    result["outputs"] = [{"id": r["id"], "output": o} for r, o in zip(records, outputs)]
    return result
