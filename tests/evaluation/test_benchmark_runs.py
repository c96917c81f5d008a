"""The evaluation harness (what ``recipes/evaluate.py`` runs) on benchmark data, on the real tiny model: the
exact prompts it sends (read back from ``items/choice.jsonl``), the letter it scores, and where the report
places the figure."""

import csv
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chimed_trl.configs import ChimedModelConfig
from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.stages.evaluate import run_evaluation

from .test_prompts import official_cmmlu_prompt


def _items(out, task):
    return [json.loads(x) for x in (out / "items" / f"{task}.jsonl").read_text("utf-8").splitlines()]


def _letter_probabilities(model_dir, prompt, letters):
    """Plain transformers: softmax over the letters of the logit of the token ``prompt + letter`` ends with."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        last = model(input_ids=tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1]
    ids = [tokenizer(prompt + x).input_ids[-1] for x in letters]
    return dict(zip(letters, last[ids].softmax(-1).tolist()))


def test_cmmlu_run_sends_the_official_prompts(shared_data, tiny_model_dir, tmp_path):
    """Real anatomy questions, 5-shot, through run_evaluation: every prompt in items/choice.jsonl equals the
    re-stated official code (with the tokenizer and max_length 2048), the letter is read after 答案是：, and a
    one-subject run is kept out of the paper's CMMLU column (it is not the paper's 7 subjects).

    catches: the harness not passing the format/tokenizer on (English header, 答案：), items missing or out of
    order, a partial run placed in the paper column."""
    pd = pytest.importorskip("pandas")
    out = tmp_path / "cmmlu"
    args = EvalArguments(
        output_dir=str(out),
        tasks=["choice"],
        choice_datasets=[{"card": "cmmlu", "path": str(shared_data / "cmmlu/test/anatomy.csv")}],
        choice_dev_datasets=[{"card": "cmmlu", "path": str(shared_data / "cmmlu/dev/anatomy.csv")}],
        choice_k_shot=5,
        paper_choice_benchmark="CMMLU",
        batch_size=32,
    )
    result = run_evaluation(args, ChimedModelConfig(model_name_or_path=str(tiny_model_dir)))
    items = _items(out, "choice")
    dev_df = pd.read_csv(shared_data / "cmmlu/dev/anatomy.csv", header=0, index_col=0)
    test_df = pd.read_csv(shared_data / "cmmlu/test/anatomy.csv", header=0, index_col=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(items) == len(test_df) == result["tasks"]["choice"]["total"]
    for i, item in enumerate(items):
        assert item["prompt"] == official_cmmlu_prompt("anatomy", dev_df, test_df, i, 5, tokenizer, 2048)
        assert item["gold"] == test_df.iloc[i, 5] and item["correct"] == (item["prediction"] == item["gold"])
    assert result["tasks"]["choice"]["prompt_format"] == "cmmlu"
    expected = _letter_probabilities(tiny_model_dir, items[0]["prompt"], "ABCD")
    assert items[0]["probabilities"] == pytest.approx(expected, abs=1e-4)
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["paper"]["this_run"] == {}
    assert report["paper"]["not_placed"]["CMMLU"]["reasons"] == [
        "subjects ['anatomy'] are not the paper's (cmmlu_paper)"
    ]


def _write_ceval(folder, split, subject, rows):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{subject}_{split}.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
        writer.writerows(rows)
    return path


CEVAL_ROWS = {  # written for this test
    "clinical_medicine": [
        [0, "高血压首选的检查是", "血压测量", "胃镜", "骨密度", "肺功能", "A", ""],
        [1, "糖尿病监测指标是", "视力", "听力", "血糖", "身高", "C", ""],
        [2, "骨折首选检查", "尿检", "X线", "胃镜", "心电图", "B", ""],
    ],
    "basic_medicine": [
        [0, "红细胞的主要功能是", "运输氧气", "免疫", "凝血", "消化", "A", ""],
        [1, "胰岛素由哪个器官分泌", "肝脏", "胰腺", "肾脏", "脾脏", "B", ""],
    ],
}


def test_ceval_full_paper_subset_is_placed_and_scored_after_the_ceval_cue(tiny_model_dir, tmp_path):
    """Both paper subjects, every row (limit 0 = all), 1-shot, C-Eval's format: the figure sits in the paper's
    C-Eval column; the prompt is C-Eval's literal text and the letter is read right after 答案：.

    catches: C-Eval scored with the CMMLU template, limit 0 read as 'none', a comparable run left out."""
    val = [
        _write_ceval(tmp_path / "val", "val", s, rows[1:] if s == "clinical_medicine" else rows)
        for s, rows in CEVAL_ROWS.items()
    ]
    dev = [_write_ceval(tmp_path / "dev", "dev", "clinical_medicine", CEVAL_ROWS["clinical_medicine"][:1])]
    out = tmp_path / "ceval"
    args = EvalArguments(
        output_dir=str(out),
        tasks=["choice"],
        choice_datasets=[{"card": "ceval", "path": str(p)} for p in val],
        choice_dev_datasets=[{"card": "ceval", "path": str(p)} for p in dev],
        choice_subjects="ceval_paper",
        choice_k_shot=1,
        limit=0,
    )
    result = run_evaluation(args, ChimedModelConfig(model_name_or_path=str(tiny_model_dir)))
    items = _items(out, "choice")
    assert [i["id"] for i in items] == [
        "clinical_medicine-1",
        "clinical_medicine-2",
        "basic_medicine-0",
        "basic_medicine-1",
    ]
    assert items[0]["prompt"] == (
        "以下是中国关于临床医学考试的单项选择题，请选出其中的正确答案。\n\n"
        "高血压首选的检查是\nA. 血压测量\nB. 胃镜\nC. 骨密度\nD. 肺功能\n答案：A\n\n"
        "糖尿病监测指标是\nA. 视力\nB. 听力\nC. 血糖\nD. 身高\n答案："
    )
    assert items[2]["prompt"] == (
        "以下是中国关于基础医学考试的单项选择题，请选出其中的正确答案。\n\n"
        "红细胞的主要功能是\nA. 运输氧气\nB. 免疫\nC. 凝血\nD. 消化\n答案："
    )  # no dev rows for basic_medicine: 0-shot, as C-Eval's code would give
    assert items[0]["probabilities"] == pytest.approx(
        _letter_probabilities(tiny_model_dir, items[0]["prompt"], "ABCD"), abs=1e-4
    )
    choice = result["tasks"]["choice"]
    assert choice["coverage"] == {"scored": 4, "available": 4, "limit": None, "bundled_sample": False}
    report = json.loads((out / "report.json").read_text("utf-8"))
    placed = report["paper"]["this_run"]["C-Eval"]
    assert placed["denominator"] == 4 and placed["micro"] == pytest.approx(100 * choice["correct"] / 4)
    md = (out / "report.md").read_text("utf-8")
    assert "| **this run** | " in md and "Not placed" not in md
    # the worst items: wrong first, then by the probability given to the gold letter (computed here from the file)
    worst = sorted(items, key=lambda i: (i["correct"], i["probabilities"][i["gold"]]))[:4]
    listed = md.split("worst items:")[1]
    assert [listed.index(f"| {i['id']} |") for i in worst] == sorted(listed.index(f"| {i['id']} |") for i in worst)
