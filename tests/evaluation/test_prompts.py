"""Benchmark prompts, byte for byte, against independent statements of each benchmark's own rules.

The CMMLU expectations re-state ``haonan-li/CMMLU`` ``src/mp_utils.py`` (``format_example`` /
``gen_prompt``) in this file: the raw CSV read the official way (pandas, ``header=0, index_col=0``), the
Chinese names typed here from the official ``name_en2zh`` table, and literal strings for anatomy. The
C-Eval expectations are literal strings from C-Eval's documented format on rows written for the test.
"""

import csv

import pytest

from chimed_trl.data.sources import SourceConfig, load_records
from chimed_trl.evaluation.choice import exemplars_for, resolve_format, token_counter
from chimed_trl.evaluation.prompts import build_prompt, compose, fit_exemplars, subject_names

# Typed from the official name_en2zh table (not read from the package's JSON).
CMMLU_ZH = {
    "anatomy": "解剖学",
    "clinical_knowledge": "临床知识",
    "college_medical_statistics": "大学医学统计",
    "college_medicine": "大学医学",
    "genetics": "遗传学",
    "nutrition": "营养学",
    "professional_medicine": "专业医学",
    "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学",
}


def _raw_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:]  # header: ,Question,A,B,C,D,Answer


def official_cmmlu_prompt(subject, dev_df, test_df, i, k, tokenizer=None, max_length=2048):
    """The official gen_prompt + format_example, re-stated from their published behaviour."""

    def example(df, idx, with_answer):
        text = "题目：" + df.iloc[idx, 0]
        for j, letter in enumerate("ABCD"):
            text += f"\n{letter}. {df.iloc[idx, j + 1]}"
        text += "\n答案是："
        return text + f"{df.iloc[idx, 5]}\n\n" if with_answer else text

    head = f"以下是关于{CMMLU_ZH[subject]}的单项选择题，请直接给出正确答案的选项。\n\n"
    end = example(test_df, i, False)
    if tokenizer is None:
        return head + "".join(example(dev_df, n, True) for n in range(k)) + end
    fixed = len(tokenizer.encode(head) + tokenizer.encode(end))
    if fixed > max_length:
        return end
    shots = [(example(dev_df, n, True), tokenizer.encode(example(dev_df, n, True))) for n in range(k)]
    while shots and sum(len(ids) for _, ids in shots) >= max_length - fixed:
        longest = max(len(ids) for _, ids in shots)
        shots = [s for s in shots if len(s[1]) != longest]
    return head + "".join(text for text, _ in shots) + end


def _load(shared_data, split, subject):
    return load_records(SourceConfig(card="cmmlu", path=str(shared_data / f"cmmlu/{split}/{subject}.csv")))[0]


def test_cmmlu_anatomy_literal_strings(shared_data):
    """catches: the English file name in the header, 答案： instead of 答案是：, a missing 题目：, the exemplar's
    blank line, exemplars taken from anywhere but the first dev rows."""
    test, dev = _load(shared_data, "test", "anatomy"), _load(shared_data, "dev", "anatomy")
    (_, q, a, b, c, d, _), d0, d1 = (
        _raw_rows(shared_data / "cmmlu/test/anatomy.csv")[0],
        *_raw_rows(shared_data / "cmmlu/dev/anatomy.csv")[:2],
    )
    zero = f"以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n题目：{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案是："
    assert build_prompt(test[0], [], "cmmlu") == zero
    shot = lambda r: f"题目：{r[1]}\nA. {r[2]}\nB. {r[3]}\nC. {r[4]}\nD. {r[5]}\n答案是：{r[6]}\n\n"  # noqa: E731
    two = (
        "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
        + shot(d0)
        + shot(d1)
        + f"题目：{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n答案是："
    )
    assert build_prompt(test[0], exemplars_for(test[:1], dev, 2)[0], "cmmlu") == two


def test_cmmlu_every_real_item_matches_the_official_format(shared_data):
    """Every test question of the 9 shared subjects, 0- and 5-shot, against the re-stated official code.

    catches: any subject's Chinese name wrong in the table, pandas-vs-loader text differences, the order of
    exemplars."""
    pd = pytest.importorskip("pandas")
    checked = 0
    for subject in CMMLU_ZH:
        dev_df = pd.read_csv(shared_data / f"cmmlu/dev/{subject}.csv", header=0, index_col=0)
        test_df = pd.read_csv(shared_data / f"cmmlu/test/{subject}.csv", header=0, index_col=0)
        test, dev = _load(shared_data, "test", subject), _load(shared_data, "dev", subject)
        shots = exemplars_for(test, dev, 5)
        for i, record in enumerate(test):
            assert build_prompt(record, [], "cmmlu") == official_cmmlu_prompt(subject, dev_df, test_df, i, 0)
            assert build_prompt(record, shots[i], "cmmlu") == official_cmmlu_prompt(subject, dev_df, test_df, i, 5)
            checked += 1
    assert checked == 1815


def test_cmmlu_max_length_rule_matches_the_official_one(shared_data, tokenizer):
    """With the tokenizer: exemplars dropped longest first (ties together) until they fit, and the header
    dropped when even header + question do not fit. Max lengths chosen to hit each branch on real rows.

    catches: dropping one exemplar at a time instead of every exemplar of the longest length, '>' for '>=',
    dropping from the end, counting without special tokens."""
    pd = pytest.importorskip("pandas")
    subject = "clinical_knowledge"
    dev_df = pd.read_csv(shared_data / f"cmmlu/dev/{subject}.csv", header=0, index_col=0)
    test_df = pd.read_csv(shared_data / f"cmmlu/test/{subject}.csv", header=0, index_col=0)
    test, dev = _load(shared_data, "test", subject), _load(shared_data, "dev", subject)
    shots = exemplars_for(test[:20], dev, 5)
    count = token_counter(tokenizer)
    seen_shots = set()
    for max_length in (40, 150, 250, 350, 2048):
        for i, record in enumerate(test[:20]):
            prompt, used = compose(record, shots[i], "cmmlu", count, max_length)
            assert prompt == official_cmmlu_prompt(subject, dev_df, test_df, i, 5, tokenizer, max_length)
            seen_shots.add(used)
    assert 0 in seen_shots and 5 in seen_shots and len(seen_shots) >= 3  # the rule really dropped some


def test_fit_exemplars_hand_counts():
    """Characters as tokens, counted by hand. catches: ties not dropped together, '>' instead of '>='."""
    count = len
    head, question = "H" * 10, "Q" * 5  # fixed = 15
    # budget 25 - 15 = 10; 3+4+4+2 = 13 >= 10 -> both 4s go together -> 3+2 = 5 < 10: kept in order
    # (dropping one 4 at a time would stop at 3+4+2 = 9 and keep a 4)
    assert fit_exemplars(head, question, ["aaa", "bbbb", "cccc", "dd"], count, 25) == (head, ["aaa", "dd"])
    # budget 20 - 15 = 5; 3+2 = 5 >= 5 -> drop the 3 -> 2 < 5
    assert fit_exemplars(head, question, ["aaa", "dd"], count, 20) == (head, ["dd"])
    # header + question = 15 > 14: the question alone
    assert fit_exemplars(head, question, ["aaa"], count, 14) == ("", [])


def test_ceval_literal_strings():
    """Rows written for this test. catches: the CMMLU template reused for C-Eval (题目：, 答案是：, its header),
    the English subject name, the exemplar's missing blank line."""
    dev = [
        {"id": "d0", "subject": "clinical_medicine", "question": "高血压首选的检查是", "answer": "A",
         "options": {"A": "血压测量", "B": "胃镜", "C": "骨密度", "D": "肺功能"}},
        {"id": "d1", "subject": "clinical_medicine", "question": "骨折首选检查", "answer": "B",
         "options": {"A": "尿检", "B": "X线", "C": "胃镜", "D": "心电图"}},
    ]  # fmt: skip
    test = {"id": "t0", "subject": "clinical_medicine", "question": "糖尿病监测指标是", "answer": "C",
            "options": {"A": "视力", "B": "听力", "C": "血糖", "D": "身高"}}  # fmt: skip
    head = "以下是中国关于临床医学考试的单项选择题，请选出其中的正确答案。\n\n"
    question = "糖尿病监测指标是\nA. 视力\nB. 听力\nC. 血糖\nD. 身高\n答案："
    assert build_prompt(test, [], "ceval") == head + question
    expected = (
        head
        + "高血压首选的检查是\nA. 血压测量\nB. 胃镜\nC. 骨密度\nD. 肺功能\n答案：A\n\n"
        + "骨折首选检查\nA. 尿检\nB. X线\nC. 胃镜\nD. 心电图\n答案：B\n\n"
        + question
    )
    assert build_prompt(test, dev, "ceval") == expected
    basic = {**test, "subject": "basic_medicine"}
    assert build_prompt(basic, [], "ceval").startswith("以下是中国关于基础医学考试的单项选择题")


def test_subject_tables_and_format_resolution():
    """catches: a truncated table, a wrong name for a paper subject, auto picking the wrong benchmark."""
    cmmlu, ceval = subject_names("cmmlu"), subject_names("ceval")
    assert len(cmmlu) == 67 and len(ceval) == 52
    assert {s: cmmlu[s] for s in CMMLU_ZH} == CMMLU_ZH
    assert (ceval["clinical_medicine"], ceval["basic_medicine"], ceval["physician"]) == (
        "临床医学",
        "基础医学",
        "医师资格",
    )
    assert resolve_format("auto", [{"subject": "anatomy"}]) == "cmmlu"
    assert resolve_format("auto", [{"subject": "clinical_medicine"}]) == "ceval"
    # a subject in both tables: the sources' card decides
    assert resolve_format("auto", [{"subject": "high_school_biology"}], ["ceval"]) == "ceval"
    assert resolve_format("auto", [{"subject": "triage"}]) == "generic"


def test_unknown_subject_for_a_named_format_is_one_line():
    from chimed_trl.errors import UserError

    record = {"id": "x-1", "subject": "triage", "question": "q", "options": {"A": "a", "B": "b"}, "answer": "A"}
    with pytest.raises(UserError, match=r"choice record 'x-1': field subject: 'triage' is not a cmmlu subject"):
        build_prompt(record, [], "cmmlu")
