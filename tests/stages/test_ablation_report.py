"""The ablation report's refusals and reading of log histories (chimed_trl.ablation_report)."""

import json

import pytest

from chimed_trl.errors import UserError
from chimed_trl.stages.ablation_report import AblationReportArguments, build_report, curve, first_step_at


def reward_run(path, ids, history):
    path.mkdir(parents=True)
    metrics = {"steps": 4, "loss_type": "pairwise", "eval": {"pairwise_accuracy": 0.5}, "log_history": history}
    metrics["heldout"] = {"pair_ids": ids}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return str(path)


HISTORY = [
    {"loss": 0.7, "step": 2},
    {"eval_heldout_pairwise_accuracy": 0.5, "step": 2},
    {"eval_train_sample_pairwise_accuracy": 0.9, "step": 2},
    {"eval_heldout_pairwise_accuracy": 0.7, "step": 4},
    {"eval_train_sample_pairwise_accuracy": 0.99, "step": 4},
    {"eval_heldout_pairwise_accuracy": 0.7, "step": 4},  # the final evaluation repeats the last step
]


# Catches: a repeated final evaluation drawn as an extra point, and "steps to 98%" taken from the held-out curve.
def test_curve_has_one_point_per_step_and_overfit_step_reads_the_train_curve():
    assert curve(HISTORY, "eval_heldout_pairwise_accuracy") == [(2, 0.5), (4, 0.7)]
    assert first_step_at(curve(HISTORY, "eval_train_sample_pairwise_accuracy"), 0.98) == 4
    assert first_step_at(curve(HISTORY, "eval_heldout_pairwise_accuracy"), 0.98) is None


# Catches: two reward runs scored on different held-out pairs compared as if they were the same (the ablation's
# whole point), and a reward run without the held-out curve failing with a KeyError instead of one line.
def test_different_heldout_pairs_are_refused_in_one_line(tmp_path):
    args = AblationReportArguments(
        output_dir=str(tmp_path / "report"),
        binary_reward=reward_run(tmp_path / "a", ["p1", "p2"], HISTORY),
        listwise_reward=reward_run(tmp_path / "b", ["p1", "p3"], HISTORY),
    )
    with pytest.raises(UserError, match=r"scored on different held-out pairs \(2 ids in one only\)"):
        build_report(args)
    args.listwise_reward = reward_run(tmp_path / "c", ["p1", "p2"], HISTORY[:1])
    with pytest.raises(UserError, match=r"reward run listwise .* has no held-out accuracy curve"):
        build_report(args)
    assert not (tmp_path / "report").exists()
