"""The tiny reward-model ablation end to end: the pipeline runner, every recipe, the report (real runs, real model)."""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

from ..conftest import REPO
from .test_reward_recipe import heldout_pair_scores

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ARMS = ("binary", "listwise")


def printed_evals(log_text: str, name: str) -> list[float]:
    """The pairwise accuracies of eval set ``name`` as the trainer printed them to the stage's log, in order."""
    dicts = re.findall(r"\{'eval_" + name + r"_loss'[^{}]*\}", log_text)
    return [float(ast.literal_eval(d)[f"eval_{name}_pairwise_accuracy"]) for d in dicts]


# Catches: the two reward models scored on different held-out pairs, report curves that are not the trainers' logged
# evaluations (typed in, shifted a step, or the held-out and train curves swapped), a final held-out accuracy that
# is not the saved model's, a wrong "steps to 98%", and downstream deltas that are not RS minus SFT.
@pytest.mark.slow
def test_tiny_ablation_pipeline_reports_from_the_runs(tmp_path):
    out = tmp_path / "ablation"
    cmd = [
        sys.executable,
        "-m",
        "chimed_trl.pipeline",
        "--config",
        "recipes/tiny/ablation.yaml",
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_ablation_outputs(out)


def check_ablation_outputs(out):
    """Every figure of the ablation report in ``out/report`` against the runs' own files (also usable on a kept run)."""
    report_dir = out / "report"
    assert (report_dir / "reward_ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ablation = json.loads((report_dir / "ablation.json").read_text())
    arms = {a["arm"]: a for a in ablation["reward"]}

    # the same held-out pairs, by id and by text, in both runs
    pairs = {
        arm: [json.loads(x) for x in (out / f"reward_{arm}/heldout_pairs.jsonl").read_text().splitlines()]
        for arm in ARMS
    }
    assert sorted(p["id"] for p in pairs["binary"]) == sorted(p["id"] for p in pairs["listwise"])
    as_text = {
        arm: sorted(json.dumps([p["prompt"], p["responses"]], ensure_ascii=False) for p in pairs[arm]) for arm in ARMS
    }
    assert as_text["binary"] == as_text["listwise"] and len(as_text["binary"]) == ablation["heldout_pairs"] == 10

    for arm in ARMS:
        run = out / f"reward_{arm}"
        log_text = (out / "logs" / f"reward_{arm}.log").read_text(encoding="utf-8", errors="replace")
        metrics = json.loads((run / "metrics.json").read_text())
        for curve, name in (("heldout_curve", "heldout"), ("train_curve", "train_sample")):
            points = arms[arm][curve]
            assert [step for step, _ in points] == list(range(0, metrics["steps"] + 1, 3)), (
                arm,
                curve,
            )  # eval_on_start
            printed = printed_evals(log_text, name)  # 4 significant digits in the console line
            assert [v for _, v in points] == pytest.approx(printed[: len(points)], rel=1e-3, abs=1e-4), (arm, curve)
        train = [v for _, v in arms[arm]["train_curve"]]
        first = next((step for step, v in arms[arm]["train_curve"] if v >= 0.98), None)
        assert arms[arm]["steps_to_overfit"] == first
        scores = heldout_pair_scores(run, pairs[arm])
        recomputed = sum(chosen > rejected for chosen, rejected in scores) / len(scores)
        assert arms[arm]["final_heldout_accuracy"] == pytest.approx(recomputed)
        assert arms[arm]["final_train_accuracy"] == pytest.approx(train[-1])

    # downstream: RS minus SFT, task by task, from each evaluation's own report
    papers = {name: json.loads((out / name / "report.json").read_text())["paper"]
              for name in ("eval_sft", "eval_rs_binary", "eval_rs_listwise")}  # fmt: skip
    this_run = {name: {**paper["not_placed"], **paper["this_run"]} for name, paper in papers.items()}
    rows = {r["task"]: r for r in ablation["downstream"]["rows"]}
    # the tiny evaluation scores a limited, bundled CMMLU sample: its figure is never set beside the paper's
    assert "CMMLU" in papers["eval_sft"]["not_placed"]
    assert rows["CMMLU micro"]["comparable"] is False and rows["CMMLU micro"]["paper"] is None
    for task, row in rows.items():
        benchmark, metric = task.split(" ", 1)
        sft = this_run["eval_sft"][benchmark][metric]
        for arm in ARMS:
            assert row[f"delta_{arm}"] == pytest.approx(this_run[f"eval_rs_{arm}"][benchmark][metric] - sft)
    markdown = (report_dir / "report.md").read_text()
    assert "steps to 98% train acc." in markdown and "![held-out and train accuracy](reward_ablation.png)" in markdown
    assert "figures say nothing about the paper's claim" in markdown


# Catches: a shipped ablation whose two reward arms would be scored on different held-out sets (different
# eval_datasets or eval_seed once the stage's own flags are applied), an arm with the wrong loss or data, or a stage
# naming a recipe/config that does not exist. Parses each reward stage's exact command line as the recipe would.
@pytest.mark.parametrize("name", ["tiny/ablation", "tiny/ablation_medicalgpt", "chimed-gpt/ablation"])
def test_shipped_ablation_arms_share_one_heldout_set(name):
    from chimed_trl.cli import parse_recipe_args
    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.pipeline import check_files, load_pipeline, stage_command
    from chimed_trl.stages.reward import RewardScriptArguments
    from chimed_trl.trainers import ListwiseRewardConfig

    pipe = load_pipeline(REPO / f"recipes/{name}.yaml")
    old_cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert check_files(pipe) == []
    finally:
        os.chdir(old_cwd)
    arms = {}
    for arm in ("binary", "listwise"):
        stage = next(s for s in pipe.stages if s.name == f"reward_{arm}")
        command = stage_command(pipe, stage)  # python -m chimed_trl.stages.reward ... (or accelerate launch -m)
        argv = command[command.index(stage.module) + 1 :] + ["--bf16", "false", "--use_cpu", "true"]
        argv[argv.index("--config") + 1] = str(REPO / argv[argv.index("--config") + 1])
        arms[arm] = parse_recipe_args((RewardScriptArguments, ListwiseRewardConfig, ChimedModelConfig), argv)
    (binary, binary_training, binary_model), (listwise, listwise_training, listwise_model) = (
        arms["binary"],
        arms["listwise"],
    )
    assert binary.eval_datasets and binary.eval_datasets == listwise.eval_datasets
    assert binary.eval_seed == listwise.eval_seed and binary.test_size == listwise.test_size == 0
    assert binary_model.model_name_or_path == listwise_model.model_name_or_path  # the same SFT model
    assert (binary_training.loss_type, listwise_training.loss_type) == ("pairwise", "listmle")
    assert binary_training.eval_strategy == listwise_training.eval_strategy == "steps"
    assert [s.card or s.formatter for s in binary.datasets] == ["cmd_reward"]
    assert [s.formatter for s in listwise.datasets] == ["ranked"]
    report = next(s for s in pipe.stages if s.recipe == "ablation_report")
    assert report.args["binary_reward"] == "{reward_binary}" and report.args["listwise_reward"] == "{reward_listwise}"
