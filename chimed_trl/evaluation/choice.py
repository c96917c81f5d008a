"""Multiple-choice QA (C-Eval, CMMLU, MedQA-MCMLE): accuracy by the next-token probability of each option letter.

One forward per question, batched with left padding: the prompt ends with ``答案：`` and the
prediction is the option letter (among *that* question's options) with the highest next-token
logit. 0-shot or k-shot, exemplars from the dev split of the same subject. An optional
generate-then-extract mode reads the first option letter of a generated answer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from chimed_trl.templates import encode_prompt

# The subsets the ChiMed-GPT paper scored.
PRESETS = {
    "cmmlu_paper": [
        "anatomy",
        "clinical_knowledge",
        "college_medical_statistics",
        "genetics",
        "nutrition",
        "traditional_chinese_medicine",
        "virology",
    ],
    "ceval_paper": ["clinical_medicine", "basic_medicine"],
}
ANSWER_CUE = "答案："


def format_question(record: dict, with_answer: bool = False) -> str:
    lines = [f"题目：{record['question']}"] + [f"{k}. {v}" for k, v in record["options"].items()]
    answer = f"{ANSWER_CUE}{record['answer']}" if with_answer else ANSWER_CUE
    return "\n".join(lines + [answer])


def build_prompt(record: dict, exemplars: Sequence[dict] = ()) -> str:
    subject = record.get("subject") or "医学"
    header = f"以下是关于{subject}的单项选择题，请直接给出正确答案的选项。"
    blocks = [format_question(e, with_answer=True) for e in exemplars] + [format_question(record)]
    return header + "\n\n" + "\n\n".join(blocks)


def letter_token_ids(tokenizer, letters: Sequence[str]) -> dict[str, int]:
    """The id each letter takes as the token right after ``答案：`` (tokenizer-specific spacing handled)."""
    base = tokenizer(ANSWER_CUE, add_special_tokens=False).input_ids
    ids = {}
    for letter in letters:
        full = tokenizer(ANSWER_CUE + letter, add_special_tokens=False).input_ids
        extra = full[len(base) :] if full[: len(base)] == base else None
        if not extra or len(extra) != 1:
            raise ValueError(f"option letter {letter!r} is not a single token after {ANSWER_CUE!r} for this tokenizer")
        ids[letter] = extra[0]
    return ids


@torch.no_grad()
def next_token_logits(model, tokenizer, prompts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """Logits of the token after each prompt, (len(prompts), vocab).

    Prompts are tokenized once (BOS first when the tokenizer adds one, as in training: see
    :func:`chimed_trl.templates.encode_prompt`), sorted by length so each batch pads little, run with
    left padding and ``logits_to_keep=1`` (only the last position's logits), then put back in input order.
    """
    if not prompts:
        return torch.empty(0)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = torch.empty(len(encoded), model.config.get_text_config().vocab_size)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=len(starts) < 2, leave=False):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # positions start at each prompt's first real token
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=1,
        )
        out[chunk] = logits.logits[:, -1, :].float().cpu()
    return out


def predict_letters(model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]], batch_size: int = 8):
    """(predicted letter, {letter: probability among the options}) per prompt."""
    letters = sorted({letter for opts in options for letter in opts})
    ids = letter_token_ids(tokenizer, letters)
    letter_logits = next_token_logits(model, tokenizer, prompts, batch_size)[:, [ids[x] for x in letters]]
    # each question competes only among its own options
    allowed = torch.tensor([[x in opts for x in letters] for opts in options])
    probs = letter_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    best = probs.argmax(-1).tolist()
    return [
        (letters[b], {x: float(p) for x, p, ok in zip(letters, row.tolist(), flags) if ok})
        for b, row, flags in zip(best, probs, allowed.tolist())
    ]


def extract_choice(text: str, letters: Sequence[str]) -> str | None:
    """The first standalone option letter in a generated answer (None when there is none)."""
    pattern = rf"(?<![A-Za-z])([{''.join(letters)}])(?![A-Za-z])"
    match = re.search(pattern, text)
    return match.group(1) if match else None


def select(records: Sequence[dict], subjects: Sequence[str] | str | None) -> list[dict]:
    if subjects is None:
        return list(records)
    if isinstance(subjects, str) and subjects not in PRESETS:
        from chimed_trl.errors import UserError

        raise UserError(f"choice_subjects: unknown preset {subjects!r}; expected one of {', '.join(PRESETS)}")
    wanted = set(PRESETS[subjects] if isinstance(subjects, str) else subjects)
    return [r for r in records if r["subject"] in wanted]


def accuracy_table(records: Sequence[dict], predictions: Sequence[str | None]) -> dict:
    by_subject: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record, pred in zip(records, predictions):
        by_subject[record["subject"]][0] += int(pred == record["answer"])
        by_subject[record["subject"]][1] += 1
    correct = sum(c for c, _ in by_subject.values())
    total = sum(n for _, n in by_subject.values())
    per_subject = {s: {"correct": c, "total": n, "accuracy": c / n} for s, (c, n) in sorted(by_subject.items())}
    return {
        "per_subject": per_subject,
        "micro_accuracy": correct / total if total else 0.0,
        "macro_accuracy": sum(v["accuracy"] for v in per_subject.values()) / len(per_subject) if per_subject else 0.0,
        "correct": correct,
        "total": total,
        "unanswered": sum(p is None for p in predictions),
    }


def evaluate_choice(
    model,
    tokenizer,
    records: Sequence[dict],
    dev_records: Sequence[dict] = (),
    k_shot: int = 0,
    batch_size: int = 8,
    generate: Callable[[list[str]], list[str]] | None = None,
) -> dict:
    """Accuracy per subject, micro and macro. ``generate`` switches to generate-then-extract.

    ``k_shot`` is what was asked; a subject with fewer dev questions gets what exists, and the table
    reports the shots actually used (``shots_used``: min/max over questions) beside the request.
    """
    dev_by_subject: dict[str, list[dict]] = defaultdict(list)
    for r in dev_records:
        dev_by_subject[r["subject"]].append(r)
    exemplars = [dev_by_subject[r["subject"]][:k_shot] for r in records]
    prompts = [build_prompt(r, shots) for r, shots in zip(records, exemplars)]
    probabilities: list[dict | None] = [None] * len(records)
    if generate is None:
        results = predict_letters(model, tokenizer, prompts, [list(r["options"]) for r in records], batch_size)
        predictions = [letter for letter, _ in results]
        probabilities = [probs for _, probs in results]
    else:
        outputs = generate(prompts)
        if len(outputs) != len(records):
            raise ValueError(f"the generator returned {len(outputs)} outputs for {len(records)} questions")
        predictions = [extract_choice(text, list(r["options"])) for text, r in zip(outputs, records)]
    table = accuracy_table(records, predictions)
    used = [len(shots) for shots in exemplars] or [0]
    table["k_shot"] = k_shot
    table["shots_used"] = {"min": min(used), "max": max(used)}
    table["mode"] = "generate" if generate else "letter_probability"
    table["predictions"] = [
        {"id": r["id"], "prediction": p, "answer": r["answer"], "probabilities": probs}
        for r, p, probs in zip(records, predictions, probabilities)
    ]
    return table
