"""Reading an option letter out of a generated answer, by each benchmark's own rules.

- ``cmmlu``: the official cascade (haonan-li/CMMLU ``src/mp_utils.py`` ``extract_choice``): the first
  character when it is a letter; then single-match patterns in order; then "recursive" patterns (the
  last letter of a chain such as ``A…B…正确``); then a weak ``[^不]是 X``; then a response mentioning
  exactly one letter. The official code then *guesses at random* so that every response has a letter;
  here that guess is seeded per item (same guess on every run) and counted, so a report can say how
  many answers were guesses.
- ``ceval``: the pattern list of C-Eval's answer-only evaluator (hkust-nlp/ceval
  ``code/evaluator_series/evaluators/chatgpt.py``): the first character when it is a letter, else the
  first pattern with any match, whose *last* match is the answer; no match is no answer (scored wrong,
  as C-Eval does). No guessing.
- ``generic``: the first standalone option letter (any letter the question offers).

The regular expressions are the benchmarks' published rules, restated; they are protocol facts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

LETTERS = "ABCD"

# CMMLU, step 1: (pattern, group holding the letter), tried in order; the first search hit wins.
CMMLU_SINGLE = (
    (r"答案(选项)?(是|为)：? ?([ABCD])", 3),
    (r"答案(是|为)选项 ?([ABCD])", 2),
    (r"故?选择?：? ?([ABCD])", 1),
    (r"([ABCD]) ?选?项(是|为)?正确", 1),
    (r"正确的?选项(是|为) ?([ABCD])", 2),
    (r"答案(应该)?(是|为)([ABCD])", 3),
    (r"选项 ?([ABCD]) ?(是|为)?正确", 1),
    (r"选择答案 ?([ABCD])", 1),
    (r"答案?：?([ABCD])", 1),
    (r"([ABCD])(选?项)?是?符合题意", 1),
    (r"答案选项：? ?([ABCD])", 1),
    (r"答案(选项)?为(.*?)([ABCD])", 3),
)
# CMMLU, step 2: a hit is re-searched from its second character on, as long as it matches again.
CMMLU_CHAINED = (r"([ABCD])(.*?)当选", r"([ABCD])(.*?)正确")
CMMLU_WEAK = r"[^不]是：? ?([ABCD])"
CMMLU_ONLY_ONE = r"^[^ABCD]*([ABCD])[^ABCD]*$"

# C-Eval's answer-only pattern list, in order.
CEVAL_PATTERNS = (
    r"^选([A-D])",
    r"^选项([A-D])",
    r"答案是\s?选?项?\s?([A-D])",
    r"答案为\s?选?项?\s?([A-D])",
    r"答案应为\s?选?项?\s?([A-D])",
    r"答案选\s?选?项?\s?([A-D])",
    r"答案是:\s?选?项?\s?([A-D])",
    r"答案应该是:\s?选?项?\s?([A-D])",
    r"正确的一项是\s?([A-D])",
    r"答案为:\s?选?项?\s?([A-D])",
    r"答案应为:\s?选?项?\s?([A-D])",
    r"答案:\s?选?项?\s?([A-D])",
    r"答案是：\s?选?项?\s?([A-D])",
    r"答案应该是：\s?选?项?\s?([A-D])",
    r"答案为：\s?选?项?\s?([A-D])",
    r"答案应为：\s?选?项?\s?([A-D])",
    r"答案：\s?选?项?\s?([A-D])",
)


def cmmlu_letter(response: str) -> str | None:
    """CMMLU's cascade without its random last step: the letter, or None where the official code guesses."""
    if response[:1] in tuple(LETTERS):
        return response[0]
    for pattern, group in CMMLU_SINGLE:
        match = re.search(pattern, response, re.M)
        if match:
            return match.group(group)
    for pattern in CMMLU_CHAINED:
        match = re.search(pattern, response, re.M)
        letter = None
        while match:  # the last link of the chain: keep searching inside the hit, one character on
            letter = match.group(1)
            match = re.search(pattern, match.group(0)[1:], re.M)
        if letter:
            return letter
    match = re.search(CMMLU_WEAK, response, re.M) or re.match(CMMLU_ONLY_ONE, response)
    return match.group(1) if match else None


def ceval_letter(response: str) -> str | None:
    """C-Eval's answer-only extraction (response stripped first, as C-Eval does); None when nothing matches."""
    response = response.strip()
    if response[:1] in tuple(LETTERS):
        return response[0]
    for pattern in CEVAL_PATTERNS:
        found = re.findall(pattern, response)
        if found:
            return found[-1]
    return None


def generic_letter(response: str, letters: Sequence[str]) -> str | None:
    """The first standalone option letter (not part of a Latin word)."""
    match = re.search(rf"(?<![A-Za-z])([{''.join(letters)}])(?![A-Za-z])", response)
    return match.group(1) if match else None


def seeded_guess(seed: int, item_id: str, letters: Sequence[str] = LETTERS) -> str:
    """CMMLU's random fallback made reproducible: the same guess for an item on every run and in any order."""
    return random.Random(f"{seed}:{item_id}").choice(list(letters))


def extract(response: str, fmt: str, letters: Sequence[str], seed: int, item_id: str) -> tuple[str | None, str]:
    """(letter or None, how it was read: ``pattern`` | ``fallback_guess`` | ``none``)."""
    if fmt == "cmmlu":
        letter = cmmlu_letter(response)
        return (letter, "pattern") if letter else (seeded_guess(seed, item_id), "fallback_guess")
    letter = ceval_letter(response) if fmt == "ceval" else generic_letter(response, letters)
    return letter, "pattern" if letter else "none"
