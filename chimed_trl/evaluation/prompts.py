"""The multiple-choice prompts, in each benchmark's own format, byte for byte.

- ``cmmlu``: the official CMMLU code (haonan-li/CMMLU ``src/mp_utils.py``): a header naming the subject
  by its Chinese name (``以下是关于解剖学的单项选择题，请直接给出正确答案的选项。`` + blank line), then per
  question ``题目：{question}\\nA. …\\nB. …\\nC. …\\nD. …\\n答案是：``; an exemplar adds ``{X}\\n\\n``.
  Exemplars are the first k dev rows of the subject; when a tokenizer is given, the official
  ``max_length`` rule drops exemplars that do not fit (see :func:`fit_exemplars`).
- ``ceval``: C-Eval's format (its README, ``code/evaluator_series``, lm-evaluation-harness's ceval
  tasks): ``以下是中国关于{中文科目名}考试的单项选择题，请选出其中的正确答案。`` + blank line, per question
  ``{question}\\nA. …\\n答案：`` (no ``题目：``); an exemplar adds ``{X}\\n\\n``. The first k dev rows.
- ``generic``: the CMMLU layout for sets with no official prompt (MedQA-MCMLE, the bundled samples); the
  header names the record's ``subject`` as written. Not comparable with any published figure.

The subject tables are facts shipped as data (``subject_names.json``, sources named there).

Protocol details the official code leaves open, and what is done here:

- CMMLU reads its CSVs with pandas, which turns an all-numeric column into numbers ("0.50" would print
  as "0.5"); our loader keeps the text. On the 9 medical subjects (1,860 dev + test rows) the two agree on
  every cell; a column of numbers only in another subject could differ.
- CMMLU scores the logits of the bare letter tokens (``convert_tokens_to_ids("A")``); we score the token
  each letter takes right after the cue: usually the same token on SentencePiece/LLaMA-style vocabularies,
  but stays right on tokenizers where the bare letter is not what follows ``：``.
- C-Eval's ``eval.py`` passes the English subject name into its template; its README, its prompt figure
  and lm-evaluation-harness use the Chinese name, as done here. C-Eval's answer-only API evaluator compares
  a few-shot response with the answer as a whole; we read it with its pattern list in every setting.
- C-Eval's code has no ``max_length`` rule: a C-Eval prompt always holds the k exemplars asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources

from chimed_trl.errors import UserError

FORMATS = ("cmmlu", "ceval", "generic")
# The cue each format ends a question with; the option letter is read right after it.
ANSWER_CUES = {"cmmlu": "答案是：", "ceval": "答案：", "generic": "答案是："}
# CMMLU's default --max_length (src/hf_causal_model.py): the token budget of the exemplar-dropping rule.
CMMLU_MAX_LENGTH = 2048


@cache
def subject_names(benchmark: str) -> dict[str, str]:
    """English file name -> Chinese name, for ``cmmlu`` (67 subjects) or ``ceval`` (52)."""
    text = resources.files("chimed_trl.evaluation").joinpath("subject_names.json").read_text("utf-8")
    return json.loads(text)[benchmark]["names"]


def chinese_subject(record: dict, fmt: str) -> str:
    """The subject as the format's header names it; an unknown subject is a one-line error naming the record."""
    subject = record.get("subject") or ""
    if fmt == "generic":
        return subject or "医学"
    names = subject_names(fmt)
    if subject not in names:
        raise UserError(
            f"choice record {record.get('id')!r}: field subject: {subject!r} is not a {fmt} subject "
            f"(the {fmt} prompt names it in Chinese); set choice_format: generic for other sets"
        )
    return names[subject]


def header(record: dict, fmt: str) -> str:
    subject = chinese_subject(record, fmt)
    if fmt == "ceval":
        return f"以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
    return f"以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"


def question_block(record: dict, fmt: str, with_answer: bool = False) -> str:
    """One question in the format: question, one line per option, the cue; with the answer, ``X`` + blank line."""
    lead = "" if fmt == "ceval" else "题目："
    options = "".join(f"\n{letter}. {text}" for letter, text in record["options"].items())
    block = f"{lead}{record['question']}{options}\n{ANSWER_CUES[fmt]}"
    return block + f"{record['answer']}\n\n" if with_answer else block


def fit_exemplars(
    head: str, question: str, exemplars: Sequence[str], count_tokens: Callable[[str], int], max_length: int
) -> tuple[str, list[str]]:
    """CMMLU's ``gen_prompt`` budget rule: (header kept or "", exemplars kept, in order).

    Token counts are the tokenizer's ``encode`` of each piece alone (special tokens included, as the
    official code counts them). When header + question alone exceed ``max_length`` the prompt is the
    question alone (no header, no exemplar). Otherwise, while the exemplars' total is ``>=`` the budget
    left, every exemplar of the longest length is dropped at once (ties go together), then repeat.
    """
    fixed = count_tokens(head) + count_tokens(question)
    if fixed > max_length:
        return "", []
    kept = [(text, count_tokens(text)) for text in exemplars]
    while kept and sum(n for _, n in kept) >= max_length - fixed:
        longest = max(n for _, n in kept)
        kept = [(text, n) for text, n in kept if n != longest]
    return head, [text for text, _ in kept]


def compose(
    record: dict,
    exemplars: Sequence[dict] = (),
    fmt: str = "generic",
    count_tokens: Callable[[str], int] | None = None,
    max_length: int = CMMLU_MAX_LENGTH,
) -> tuple[str, int]:
    """(the exact prompt text for ``record``, how many exemplars it holds).

    ``exemplars`` are already the first k dev rows of its subject. ``count_tokens`` switches on the CMMLU
    ``max_length`` rule (cmmlu and generic formats; C-Eval's code has no such rule). Without it every
    exemplar is kept, as the official code does without a tokenizer.
    """
    if fmt not in FORMATS:
        raise UserError(f"choice_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    head = header(record, fmt)
    question = question_block(record, fmt)
    shots = [question_block(e, fmt, with_answer=True) for e in exemplars]
    if count_tokens is not None and fmt != "ceval":
        head, shots = fit_exemplars(head, question, shots, count_tokens, max_length)
    return head + "".join(shots) + question, len(shots)


def build_prompt(
    record: dict,
    exemplars: Sequence[dict] = (),
    fmt: str = "generic",
    count_tokens: Callable[[str], int] | None = None,
    max_length: int = CMMLU_MAX_LENGTH,
) -> str:
    """The exact prompt text (see :func:`compose`)."""
    return compose(record, exemplars, fmt, count_tokens, max_length)[0]
