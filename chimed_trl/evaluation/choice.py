"""Multiple-choice QA (C-Eval, CMMLU, MedQA-MCMLE): accuracy by the next-token probability of each option letter.

One forward per question, batched with left padding: the prompt (the benchmark's own format, see
:mod:`chimed_trl.evaluation.prompts`) ends with its answer cue and the prediction is the option letter
(among *that* question's options) with the highest next-token logit. 0-shot or k-shot, exemplars the
first k dev rows of the same subject. An optional generate-then-extract mode reads the letter of a
generated answer by the benchmark's own rules (:mod:`chimed_trl.evaluation.extraction`).

Every question gives one item record (id, subject, the exact prompt, gold, prediction, per-option
probabilities or the raw output, correct): the harness writes them to ``items/choice.jsonl``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from chimed_trl.evaluation.extraction import extract, generic_letter
from chimed_trl.evaluation.prompts import ANSWER_CUES, CMMLU_MAX_LENGTH, build_prompt, compose, subject_names
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
ANSWER_CUE = "答案："  # the attitude scales' cue (their prompts end with it)
__all__ = ["PRESETS", "build_prompt", "evaluate_choice", "extract_choice", "predict_letters", "resolve_format"]


def extract_choice(text: str, letters: Sequence[str]) -> str | None:
    """The first standalone option letter in a generated answer (None when there is none)."""
    return generic_letter(text, letters)


def resolve_format(requested: str, records: Sequence[dict], cards: Sequence[str | None] = ()) -> str:
    """``auto`` -> the benchmark the data comes from: its card (cmmlu/ceval), else the subject table that
    holds every subject, else ``generic``; any other value is returned as given."""
    if requested != "auto":
        return requested
    for fmt in ("cmmlu", "ceval"):
        if cards and all(card == fmt for card in cards):
            return fmt
    subjects = {r.get("subject") for r in records}
    for fmt in ("cmmlu", "ceval"):
        if subjects and subjects <= set(subject_names(fmt)):
            return fmt
    return "generic"


def letter_token_ids(tokenizer, letters: Sequence[str], cue: str = ANSWER_CUE) -> dict[str, int]:
    """The id each letter takes as the token right after ``cue`` (tokenizer-specific spacing handled)."""
    base = tokenizer(cue, add_special_tokens=False).input_ids
    ids = {}
    for letter in letters:
        full = tokenizer(cue + letter, add_special_tokens=False).input_ids
        extra = full[len(base) :] if full[: len(base)] == base else None
        if not extra or len(extra) != 1:
            raise ValueError(f"option letter {letter!r} is not a single token after {cue!r} for this tokenizer")
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
        rows = [torch.tensor(encoded[i], dtype=torch.long) for i in chunk]
        ids = pad(rows, pad_id, padding_side="left")
        mask = pad([torch.ones_like(r) for r in rows], 0, padding_side="left")
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


def predict_letters(
    model,
    tokenizer,
    prompts: Sequence[str],
    options: Sequence[Sequence[str]],
    batch_size: int = 8,
    cue: str = ANSWER_CUE,
):
    """(predicted letter, {letter: probability among the options}) per prompt; ``cue`` is what prompts end with."""
    letters = sorted({letter for opts in options for letter in opts})
    ids = letter_token_ids(tokenizer, letters, cue)
    letter_logits = next_token_logits(model, tokenizer, prompts, batch_size)[:, [ids[x] for x in letters]]
    # each question competes only among its own options
    allowed = torch.tensor([[x in opts for x in letters] for opts in options])
    probs = letter_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    best = probs.argmax(-1).tolist()
    return [
        (letters[b], {x: float(p) for x, p, ok in zip(letters, row.tolist(), flags) if ok})
        for b, row, flags in zip(best, probs, allowed.tolist())
    ]


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


def exemplars_for(records: Sequence[dict], dev_records: Sequence[dict], k_shot: int) -> list[list[dict]]:
    """The first ``k_shot`` dev rows of each record's subject, in file order (both benchmarks' rule)."""
    dev_by_subject: dict[str, list[dict]] = defaultdict(list)
    for r in dev_records:
        dev_by_subject[r["subject"]].append(r)
    return [dev_by_subject[r["subject"]][:k_shot] for r in records]


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a piece of text as CMMLU counts them: ``tokenizer.encode`` (special tokens included)."""
    return lambda text: len(tokenizer.encode(text))


def _item(record: dict, prompt: str, prediction: str | None, **extra) -> dict:
    return {
        "id": record["id"],
        "subject": record["subject"],
        "prompt": prompt,
        "gold": record["answer"],
        "prediction": prediction,
        **extra,
        "correct": prediction == record["answer"],
    }


def evaluate_choice(
    model,
    tokenizer,
    records: Sequence[dict],
    dev_records: Sequence[dict] = (),
    k_shot: int = 0,
    batch_size: int = 8,
    generate: Callable[[list[str]], list[str]] | None = None,
    prompt_format: str = "generic",
    max_length: int = CMMLU_MAX_LENGTH,
    seed: int = 0,
) -> dict:
    """Accuracy per subject, micro and macro, and one item record per question. ``generate`` switches to
    generate-then-extract.

    ``k_shot`` is what was asked; a subject with fewer dev questions gets what exists, and CMMLU's
    ``max_length`` rule may drop exemplars (local model only: it needs the tokenizer); ``shots_used``
    (min/max over questions) reports what the prompts really hold.
    """
    exemplars = exemplars_for(records, dev_records, k_shot)
    count = token_counter(tokenizer) if tokenizer is not None else None
    composed = [compose(r, shots, prompt_format, count, max_length) for r, shots in zip(records, exemplars)]
    prompts = [prompt for prompt, _ in composed]
    used = [shots for _, shots in composed] or [0]
    if generate is None:
        options = [list(r["options"]) for r in records]
        results = predict_letters(model, tokenizer, prompts, options, batch_size, ANSWER_CUES[prompt_format])
        items = [_item(r, p, letter, probabilities=probs) for r, p, (letter, probs) in zip(records, prompts, results)]
    else:
        outputs = generate(prompts)
        if len(outputs) != len(records):
            raise ValueError(f"the generator returned {len(outputs)} outputs for {len(records)} questions")
        items = []
        for r, p, text in zip(records, prompts, outputs):
            letter, how = extract(text, prompt_format, list(r["options"]), seed, r["id"])
            items.append(_item(r, p, letter, output=text, extraction=how))
    table = accuracy_table(records, [i["prediction"] for i in items])
    table.update(
        k_shot=k_shot,
        shots_used={"min": min(used), "max": max(used)},
        mode="generate" if generate else "letter_probability",
        prompt_format=prompt_format,
        items=items,
    )
    if generate is not None:
        guesses = [i for i in items if i["extraction"] == "fallback_guess"]
        table["fallback_guesses"] = len(guesses)
        table["correct_without_guesses"] = table["correct"] - sum(i["correct"] for i in guesses)
    return table
