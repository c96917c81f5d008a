import pytest
from transformers import AutoModelForCausalLM

from chimed_trl.data.sources import SourceConfig, load_records
from chimed_trl.evaluation.choice import (
    PRESETS,
    build_prompt,
    evaluate_choice,
    extract_choice,
    letter_token_ids,
    predict_letters,
    select,
)

QUESTIONS = [
    {
        "id": "1",
        "subject": "内科",
        "question": "高血压患者应",
        "options": {"A": "高盐饮食", "B": "低盐饮食"},
        "answer": "B",
    },
    {
        "id": "2",
        "subject": "内科",
        "question": "糖尿病监测",
        "options": {"A": "血糖", "B": "视力", "C": "听力", "D": "身高", "E": "体温"},
        "answer": "A",
    },
    {
        "id": "3",
        "subject": "外科",
        "question": "骨折首选检查",
        "options": {"A": "X线", "B": "胃镜", "C": "尿检"},
        "answer": "A",
    },
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_generic_prompt_with_exemplars():
    """Sets with no official prompt get the CMMLU layout with their own subject text (literal expected string)."""
    expected = (
        "以下是关于内科的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：糖尿病监测\nA. 血糖\nB. 视力\nC. 听力\nD. 身高\nE. 体温\n答案是：A\n\n"
        "题目：高血压患者应\nA. 高盐饮食\nB. 低盐饮食\n答案是："
    )
    assert build_prompt(QUESTIONS[0], [QUESTIONS[1]]) == expected


def test_batched_equals_one_at_a_time_and_respects_options(model, tokenizer):
    prompts = [build_prompt(q) for q in QUESTIONS]
    options = [list(q["options"]) for q in QUESTIONS]
    batched = predict_letters(model, tokenizer, prompts, options, batch_size=3)
    single = [predict_letters(model, tokenizer, [p], [o], batch_size=1)[0] for p, o in zip(prompts, options)]
    for (lb, pb), (ls, ps), opts in zip(batched, single, options):
        assert lb == ls and lb in opts and set(pb) == set(opts)
        assert all(abs(pb[k] - ps[k]) < 1e-4 for k in opts)
        assert abs(sum(pb.values()) - 1) < 1e-5


def test_letters_are_single_tokens(tokenizer):
    ids = letter_token_ids(tokenizer, "ABCDE")
    assert len(set(ids.values())) == 5


def test_extract_choice():
    assert extract_choice("答案是B。", "ABCD") == "B"
    assert extract_choice("Based on it, C", "ABCD") == "C"
    assert extract_choice("不知道", "ABCD") is None


def test_accuracy_tables_micro_macro(model, tokenizer):
    key = {q["id"]: q["answer"] for q in QUESTIONS}
    oracle = lambda prompts: [f"答案：{key[q['id']]}" for q in QUESTIONS]  # noqa: E731
    result = evaluate_choice(model, tokenizer, QUESTIONS, generate=oracle)
    assert result["micro_accuracy"] == 1.0 and result["macro_accuracy"] == 1.0 and result["mode"] == "generate"
    wrong = lambda prompts: ["A", "A", "A"]  # noqa: E731
    result = evaluate_choice(model, tokenizer, QUESTIONS, generate=wrong)
    assert result["per_subject"]["内科"]["accuracy"] == 0.5 and result["per_subject"]["外科"]["accuracy"] == 1.0
    assert result["micro_accuracy"] == pytest.approx(2 / 3) and result["macro_accuracy"] == pytest.approx(0.75)


def test_real_cmmlu_paper_subset(shared_data, model, tokenizer):
    records, dev = [], []
    for subject in PRESETS["cmmlu_paper"]:
        records += load_records(SourceConfig(card="cmmlu", path=str(shared_data / f"cmmlu/test/{subject}.csv")))[0]
        dev += load_records(SourceConfig(card="cmmlu", path=str(shared_data / f"cmmlu/dev/{subject}.csv")))[0]
    records = select(records, "cmmlu_paper")
    result = evaluate_choice(model, tokenizer, records, dev, k_shot=0, batch_size=32)
    assert result["total"] == 1166 and len(result["per_subject"]) == 7
    assert 0.15 < result["micro_accuracy"] < 0.40  # a random tiny model lands near chance (0.25)
    by_id = {r["id"]: r["answer"] for r in records}
    key = evaluate_choice(model, tokenizer, records, generate=lambda prompts: [by_id[r["id"]] for r in records])
    assert key["micro_accuracy"] == 1.0  # the plumbing: reading the answer key scores 100%
    few_shot = evaluate_choice(model, tokenizer, records[:20], dev, k_shot=5, batch_size=8)
    assert few_shot["k_shot"] == 5 and few_shot["total"] == 20


def test_probabilities_read_each_letters_own_token(model, tokenizer):
    """Against plain transformers: the letter's probability is the softmax, over the question's letters, of the
    logit of the token that ``prompt + letter`` ends with, at the prompt's last position.

    catches: scoring reading the next letter's token id (an off-by-one in the letter -> id map)."""
    import torch

    question = QUESTIONS[1]
    prompt = build_prompt(question)
    letters = list(question["options"])
    ((_, probs),) = predict_letters(model, tokenizer, [prompt], [letters])
    ids = tokenizer(prompt, return_tensors="pt").input_ids  # the tiny tokenizer adds no BOS
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1]
    letter_ids = [tokenizer(prompt + x).input_ids[-1] for x in letters]
    assert len(set(letter_ids)) == len(letters)
    expected = last[letter_ids].softmax(-1)
    for letter, p in zip(letters, expected.tolist()):
        assert probs[letter] == pytest.approx(p, abs=1e-5)


def test_unknown_preset_is_a_user_error():
    from chimed_trl.errors import UserError

    with pytest.raises(UserError, match="choice_subjects: unknown preset 'cmmlu'"):
        select(QUESTIONS, "cmmlu")
