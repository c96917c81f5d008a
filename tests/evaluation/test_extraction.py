"""Generate-mode answer extraction: hand-labelled responses, each labelled by walking the benchmark's
published rule by hand (CMMLU ``extract_choice``, C-Eval's answer-only pattern list)."""

import pytest

from chimed_trl.evaluation.choice import evaluate_choice
from chimed_trl.evaluation.extraction import ceval_letter, cmmlu_letter, generic_letter

# (response, letter by CMMLU's cascade, which step reads it)
CMMLU_LABELLED = [
    ("B", "B"),  # first character
    ("答案是：C", "C"),  # single pattern 1
    ("答案为选项 D", "D"),  # pattern 1 fails on 选, pattern 2 (答案为选项 X)
    ("我认为应该选择A。", "A"),  # 选择X
    ("C项正确，因为其余都不对", "C"),  # X项正确
    ("正确的选项是 B", "B"),  # 正确的选项是 X
    ("答案应该是D", "D"),  # 答案应该是X
    ("根据分析，A和B都不对，C当选", "C"),  # chained 当选: the last letter of the chain, not the first
    ("A、B、C选项均错误，D正确", "A"),  # the first character is a letter: read before any pattern
    ("分析：A、B、C选项均错误，D正确", "D"),  # chained 正确: D, where a first-letter reader says A
    ("这道题的答案不是A", "A"),  # the weak rule refuses 不是, the only letter mentioned is still read
    ("我觉得是B", "B"),  # weak [^不]是X
    ("答案：C。但也可能是A", "C"),  # 答案：X (pattern 9) before the weak rule
    ("The answer is D", "D"),  # the only capital A-D in the text
    (" A", "A"),  # no first-character hit (a space), the only letter
    ("无法确定", None),  # nothing: the official code guesses at random
    ("", None),  # empty: the official code fails on it; here a guess
]

CEVAL_LABELLED = [
    ("B", "B"),  # first character
    ("  C. 血糖", "C"),  # stripped first, then the first character
    ("选D", "D"),  # ^选X
    ("答案是 选项B", "B"),  # 答案是\s?选?项?\s?X
    ("我认为答案是A，不过答案是B也有道理", "B"),  # the first pattern that matches, its *last* match
    ("正确的一项是C", "C"),
    ("答案：D", "D"),  # the last pattern (full-width colon)
    ("无法回答", None),  # no pattern: no answer, scored wrong, never guessed
    ("应选择A", None),  # CMMLU reads A here; C-Eval's list has no such pattern
]


@pytest.mark.parametrize(("response", "letter"), CMMLU_LABELLED)
def test_cmmlu_cascade(response, letter):
    assert cmmlu_letter(response) == letter


@pytest.mark.parametrize(("response", "letter"), CEVAL_LABELLED)
def test_ceval_patterns(response, letter):
    assert ceval_letter(response) == letter


def test_official_rules_differ_from_first_letter_reading():
    """The old reader (first standalone letter) disagrees with CMMLU's cascade on chains and lists: the reason
    each benchmark gets its own rule."""
    disagree = [r for r, x in CMMLU_LABELLED if x and generic_letter(r, "ABCD") != x]
    assert disagree == ["根据分析，A和B都不对，C当选", "分析：A、B、C选项均错误，D正确"]


def _questions(n):
    return [
        {"id": f"anatomy-{i}", "subject": "anatomy", "question": f"问题{i}", "answer": "ABCD"[i % 4],
         "options": {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}}
        for i in range(n)
    ]  # fmt: skip


def test_cmmlu_fallback_is_seeded_and_counted():
    """catches: the official random.randint guess (not reproducible), guesses counted as read answers, the guess
    depending on the order of the questions."""
    records = _questions(12)
    # 4 readable answers (all right), 8 with no letter at all -> 8 guesses, by hand
    answers = {r["id"]: (f"答案是：{r['answer']}" if i < 4 else "不知道") for i, r in enumerate(records)}
    gen = lambda prompts: [answers[r["id"]] for r in order]  # noqa: E731
    order = records
    first = evaluate_choice(None, None, records, generate=gen, prompt_format="cmmlu", seed=3)
    assert first["fallback_guesses"] == 8 and first["unanswered"] == 0
    assert first["correct_without_guesses"] == 4
    guessed = [i for i in first["items"] if i["extraction"] == "fallback_guess"]
    assert len(guessed) == 8 and all(i["prediction"] in "ABCD" for i in guessed)
    assert first["correct"] == 4 + sum(i["correct"] for i in guessed)
    order = records[::-1]
    again = evaluate_choice(None, None, order, generate=gen, prompt_format="cmmlu", seed=3)
    by_id = {i["id"]: i["prediction"] for i in again["items"]}
    assert all(by_id[i["id"]] == i["prediction"] for i in first["items"])  # same guess, any order
    order = records
    other = evaluate_choice(None, None, records, generate=gen, prompt_format="cmmlu", seed=4)
    assert [i["prediction"] for i in other["items"]] != [i["prediction"] for i in first["items"]]


def test_ceval_no_match_is_unanswered_not_guessed():
    records = [{**r, "subject": "clinical_medicine"} for r in _questions(3)]
    result = evaluate_choice(None, None, records, generate=lambda p: ["无法回答"] * 3, prompt_format="ceval")
    assert result["unanswered"] == 3 and result["fallback_guesses"] == 0 and result["correct"] == 0
    assert all(i["prompt"].endswith("答案：") and i["output"] == "无法回答" for i in result["items"])
