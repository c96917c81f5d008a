"""Few-shot NER (CCKS-2019, ChiMST) by generation: one ``mention<TAB>type`` per output line.

Clean scoring: micro precision/recall/F1 over the set of (mention, type) pairs of each document
(``mention_type``). ``offset_strict``: each predicted line claims at most one gold span of the same
string and type, each gold span is claimed once, so a string that repeats or nests in the text is never
counted more than the model said it (a mention predicted once is one prediction, however often it
occurs). Lines that do not parse are counted, never fatal.

``paper_compat`` (beside, labelled): the ChiMed-GPT authors' counting as issue 19 describes it: every
output line is a prediction (blank lines, ``无`` and unparsable lines included), a line is right when
its whitespace-split ``mention type`` is one of the document's gold pairs, and the gold count is the
document's entity list. Their scorer itself is not in the public code we could read: this is the
described rule, restated (see :func:`authors_line_counts`).
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
    found, bad = parse_entity_lines(output, types)
    return set(found), bad


def parse_entity_lines(output: str, types: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """(every parsed (mention, type) line in order, repeats kept; number of unparsable lines)."""
    found: list[tuple[str, str]] = []
    bad = 0
    for line in output.split("文本：")[0].splitlines():
        line = _NUMBERING.sub("", line.strip().lstrip("-*• ").strip())
        if not line or line in ("无", "实体：", "实体:"):
            continue
        parts = _split_mention_type(line)
        if parts and parts[1] in types:
            found.append(parts)
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


def claimed_spans(record: dict, predicted: Sequence[tuple[str, str]]) -> int:
    """How many gold spans the predicted lines claim: each line at most one span of its string and type, in
    text order, each span once (a repeated or nested string is not matched more often than predicted)."""
    free: dict[tuple[str, str], int] = {}
    for e in record["entities"]:
        key = (record["text"][e["start"] : e["end"]], e["type"])
        free[key] = free.get(key, 0) + 1
    claimed = 0
    for pair in predicted:
        if free.get(pair, 0) > 0:
            free[pair] -= 1
            claimed += 1
    return claimed


def score_ner(records: Sequence[dict], predictions: Sequence) -> dict:
    """Micro P/R/F1. ``mention_type`` over sets: a gold pair listed twice counts once; nothing predicted gives
    P = 0. ``offset_strict`` over spans: every predicted line is one prediction (see :func:`claimed_spans`)."""
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} NER outputs for {len(records)} records")
    tp = n_pred = n_gold = 0
    s_tp = s_pred = s_gold = 0
    for record, pred in zip(records, predictions, strict=True):
        pred = list(pred)
        gold = gold_pairs(record)
        tp, n_pred, n_gold = tp + len(gold & set(pred)), n_pred + len(set(pred)), n_gold + len(gold)
        s_tp += claimed_spans(record, pred)
        s_pred, s_gold = s_pred + len(pred), s_gold + len(record["entities"])
    return {"mention_type": _prf(tp, n_pred, n_gold), "offset_strict": _prf(s_tp, s_pred, s_gold)}


def gold_pairs(record: dict) -> set[tuple[str, str]]:
    return {(record["text"][e["start"] : e["end"]], e["type"]) for e in record["entities"]}


def authors_line_counts(record: dict, output: str) -> tuple[int, int, int]:
    """(tp, predicted, gold) by the authors' counting: every ``\n``-separated output line is a prediction,
    blank, ``无`` and garbage lines included; a line is right when ``line.split()`` is exactly a gold
    (mention, type); every gold entity counts."""
    lines = output.split("\n")
    gold = gold_pairs(record)
    tp = sum(tuple(line.split()) in gold for line in lines)
    return tp, len(lines), len(record["entities"])


def score_paper_compat(records: Sequence[dict], outputs: Sequence[str]) -> dict:
    """Micro P/R/F1 over :func:`authors_line_counts` (labelled ``paper_compat`` in every report)."""
    counts = [authors_line_counts(r, o) for r, o in zip(records, outputs, strict=True)]
    return _prf(*(sum(c[i] for c in counts) for i in range(3)))


def evaluate_ner(
    generate: Callable[[list[str]], list[str]],
    records: Sequence[dict],
    train_records: Sequence[dict],
    types: Sequence[str],
    k_shot: int = 3,
) -> dict:
    exemplars = list(train_records[:k_shot])
    prompts = [build_prompt(r, exemplars, types) for r in records]
    outputs = generate(prompts)
    if len(outputs) != len(records):  # a backend that drops or adds outputs must not be scored by zip truncation
        raise ValueError(f"the generator returned {len(outputs)} outputs for {len(records)} NER records")
    parsed = [parse_entity_lines(o, types) for o in outputs]
    result = score_ner(records, [p for p, _ in parsed])
    result["paper_compat"] = score_paper_compat(records, outputs)
    result.update(documents=len(records), k_shot=k_shot, unparsable_lines=sum(b for _, b in parsed))
    result["items"] = [
        _item(r, prompt, o, pairs) for r, prompt, o, (pairs, _) in zip(records, prompts, outputs, parsed)
    ]
    return result


def _item(record: dict, prompt: str, output: str, predicted: list[tuple[str, str]]) -> dict:
    """One document's record: the exact prompt, raw output, gold and parsed pairs, its own clean F1."""
    gold = gold_pairs(record)
    one = _prf(len(gold & set(predicted)), len(set(predicted)), len(gold))
    return {
        "id": record["id"],
        "subject": None,
        "prompt": prompt,
        "output": output,
        "gold": sorted(gold),
        "prediction": sorted(set(predicted)),
        "metric": {"mention_type_f1": one["f1"]},
        "correct": gold == set(predicted),
    }
