"""The reward-model ablation's report: binary (a) vs listwise (b) reward model, and what rejection sampling with each
does downstream.

Every figure is read from the runs' own files, never typed in: the accuracy curves from each reward run's
``metrics.json`` ``log_history`` (the trainer's logs: ``eval_heldout_pairwise_accuracy`` and
``eval_train_sample_pairwise_accuracy`` at every ``eval_steps``), the held-out pair ids from ``metrics.json``
``heldout.pair_ids``, and the downstream figures from each evaluation's ``report.json`` (``paper.this_run`` and
``paper.not_placed``: the run's figures keyed by the paper's benchmark, in percent; the paper's published figure
is set beside only those the evaluation placed in the paper's column).

Writes ``report.md``, ``reward_ablation.png`` (laid out by :mod:`chimed_trl.reporting.ablation`), ``ablation.json``
and, last, ``metrics.json`` in ``output_dir``.
The two reward runs must have been scored on identical held-out pairs (same ids); otherwise the comparison is
refused with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chimed_trl.errors import UserError
from chimed_trl.reporting.ablation import PAPER_OVERFIT, chart, render
from chimed_trl.reporting.paper import published_figure
from chimed_trl.runfiles import METRICS_FILE, write_atomic, write_json

HELDOUT_ACCURACY = "eval_heldout_pairwise_accuracy"
TRAIN_ACCURACY = "eval_train_sample_pairwise_accuracy"


@dataclass
class AblationReportArguments:
    """The ablation's runs (stage folders) and where the report goes."""

    output_dir: str = field(default="runs/tiny/ablation/report", metadata={"help": "Where the report is written."})
    binary_reward: str | None = field(default=None, metadata={"help": "Reward run (a): binary pairs."})
    listwise_reward: str | None = field(default=None, metadata={"help": "Reward run (b): augmented ranked lists."})
    eval_sft: str | None = field(default=None, metadata={"help": "Evaluation of the SFT policy."})
    eval_rs_binary: str | None = field(default=None, metadata={"help": "Evaluation of the policy RS'd with (a)."})
    eval_rs_listwise: str | None = field(default=None, metadata={"help": "Evaluation of the policy RS'd with (b)."})
    overfit_accuracy: float = field(
        default=PAPER_OVERFIT["train_accuracy"],
        metadata={"help": "Train accuracy that marks the paper's overfit signature (steps to reach it are reported)."},
    )
    note: str | None = field(default=None, metadata={"help": "A line shown at the top (what the figures mean)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start over in a finished report folder."})

    def __post_init__(self):
        for key in ("binary_reward", "listwise_reward"):
            if not getattr(self, key):
                raise UserError(f"{key} is required: the folder of that reward run (recipes/reward.py output_dir)")
        if not 0 < self.overfit_accuracy <= 1:
            raise UserError(f"overfit_accuracy must be in (0, 1], got {self.overfit_accuracy!r}")


# ---------------------------------------------------------------- reading the runs


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what}: {path} not found (has that stage finished?)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{what}: {path} is not valid JSON ({e.msg}, line {e.lineno})") from None


def curve(history: list[dict], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in a trainer log history, one point per step (the first logged at that step:
    the final evaluation repeats the last periodic one)."""
    points: dict[int, float] = {}
    for entry in history:
        if isinstance(entry, dict) and isinstance(entry.get(key), int | float) and "step" in entry:
            points.setdefault(int(entry["step"]), float(entry[key]))
    return sorted(points.items())


def first_step_at(points: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, value in points if value >= threshold), None)


def _rank_rewards(metrics: dict, prefix: str = "") -> dict[str, float]:
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix + "reward_rank_")}


def reward_arm(arm: str, run_dir: Path, overfit_accuracy: float) -> dict:
    """One reward run's curves and summary figures, from its ``metrics.json``."""
    metrics = read_json(run_dir / METRICS_FILE, f"reward run {arm}")
    history = metrics.get("log_history") or []
    heldout, train = curve(history, HELDOUT_ACCURACY), curve(history, TRAIN_ACCURACY)
    if not heldout or "heldout" not in metrics:
        raise UserError(
            f"reward run {arm} ({run_dir}) has no held-out accuracy curve: train it with eval_datasets and "
            "eval_strategy: steps (recipes/tiny/ablation_reward_binary.yaml shows how)"
        )
    best_step, best = max(heldout, key=lambda point: (point[1], -point[0]))  # the earliest step of the best value
    last_train_log = next((h for h in reversed(history) if TRAIN_ACCURACY in h), {})
    final = metrics.get("eval", {})
    return {
        "arm": arm,
        "run_dir": str(run_dir),
        "loss_type": metrics.get("loss_type"),
        "steps": metrics.get("steps"),
        "heldout_curve": heldout,
        "train_curve": train,
        "steps_to_overfit": first_step_at(train, overfit_accuracy),
        "best_heldout_accuracy": best,
        "best_heldout_step": best_step,
        "final_heldout_accuracy": final.get("pairwise_accuracy"),
        "final_heldout_margin": final.get("margin"),
        "final_train_accuracy": train[-1][1] if train else None,
        "heldout_reward_by_rank": _rank_rewards(final),
        "train_reward_by_rank": _rank_rewards(last_train_log, "eval_train_sample_"),
        "heldout_pair_ids": list(metrics["heldout"]["pair_ids"]),
        # pairs left after max_length/over_length handling: the pairs the accuracy is over
        "heldout_scored": (metrics.get("data_report") or {}).get("heldout", {}).get("lists_kept"),
    }


def check_same_heldout(arms: list[dict]) -> int:
    """The number of held-out pairs, after checking every arm was scored on the very same ones."""
    first = arms[0]
    for other in arms[1:]:
        if sorted(other["heldout_pair_ids"]) != sorted(first["heldout_pair_ids"]):
            only = len(set(first["heldout_pair_ids"]) ^ set(other["heldout_pair_ids"]))
            raise UserError(
                f"reward runs {first['arm']} and {other['arm']} were scored on different held-out pairs ({only} ids "
                "in one only): give both the same eval_datasets and eval_seed"
            )
        if other["heldout_scored"] != first["heldout_scored"]:
            raise UserError(
                f"reward runs {first['arm']} and {other['arm']} scored {first['heldout_scored']} and "
                f"{other['heldout_scored']} of the same held-out pairs (max_length/over_length dropped some): give "
                "both the same max_length and over_length"
            )
    return len(first["heldout_pair_ids"])


def eval_figures(run_dir: Path, what: str) -> tuple[dict[str, float], set[str]]:
    """``({"CMMLU micro": 25.0, ...}, placed)``: an evaluation's figures under the paper's benchmark names (percent),
    and which of them the evaluation placed in the paper's column (computed like the paper's: whole benchmark,
    its prompts, paper_compat metrics). The others still compare policy with policy (RS minus SFT), never with
    the paper."""
    paper = read_json(run_dir / "report.json", what).get("paper") or {}
    figures, placed = {}, set()
    for where in ("this_run", "not_placed"):
        for benchmark, values in (paper.get(where) or {}).items():
            for metric, value in values.items():
                if metric != "denominator" and isinstance(value, int | float) and not isinstance(value, bool):
                    figures[f"{benchmark} {metric}"] = value
                    if where == "this_run":
                        placed.add(f"{benchmark} {metric}")
    return figures, placed


def downstream(args: AblationReportArguments) -> dict | None:
    """Per task: SFT, each RS policy and its delta (RS minus SFT), with the paper's ChiMed-GPT figure beside."""
    runs = {"sft": args.eval_sft, "binary": args.eval_rs_binary, "listwise": args.eval_rs_listwise}
    if not all(runs.values()):
        return None
    read = {name: eval_figures(Path(path), f"evaluation {name}") for name, path in runs.items()}
    figures = {name: found for name, (found, _) in read.items()}
    placed = read["sft"][1]
    reference = read_json(Path(runs["sft"]) / "report.json", "evaluation sft").get("paper") or {}
    rows = []
    for task, sft in figures["sft"].items():
        # the paper's figure only beside a figure computed like the paper's (a limited or stand-in set is not)
        comparable = task in placed
        row = {"task": task, "sft": sft, "comparable": comparable}
        row["paper"] = published_figure(reference, task) if comparable else None
        for arm in ("binary", "listwise"):
            rs = figures[arm].get(task)
            row[f"rs_{arm}"] = rs
            row[f"delta_{arm}"] = None if rs is None else rs - sft
        rows.append(row)
    return {"rows": rows, "paper_source": reference.get("source")}


# ---------------------------------------------------------------- the stage


def build_report(args: AblationReportArguments) -> dict:
    out = Path(args.output_dir)
    arms = [
        reward_arm("binary", Path(args.binary_reward), args.overfit_accuracy),
        reward_arm("listwise", Path(args.listwise_reward), args.overfit_accuracy),
    ]
    n_pairs = check_same_heldout(arms)
    data = downstream(args)
    out.mkdir(parents=True, exist_ok=True)
    chart(arms, args.overfit_accuracy, out)
    write_atomic(out / "report.md", render(args, arms, n_pairs, data))
    payload = {"heldout_pairs": n_pairs, "reward": arms, "downstream": data, "paper_overfit": PAPER_OVERFIT}
    write_json(out / "ablation.json", payload)
    metrics = {
        "stage": "ablation_report",
        "heldout_pairs": n_pairs,
        **{
            f"{a['arm']}_{k}": a[k]
            for a in arms
            for k in ("steps_to_overfit", "best_heldout_accuracy", "final_heldout_accuracy")
        },  # fmt: skip
    }
    write_json(out / METRICS_FILE, metrics)  # last: its presence = the stage finished
    return metrics


def write_ablation_report(args: AblationReportArguments) -> dict:
    """The recipe's body under the run-directory contract (refusals, lock, resolved config, finished rerun)."""
    from chimed_trl.stages._run import guarded_run

    sections = dict(run={"recipe": "ablation_report"}, script=args)
    return guarded_run(args.output_dir, sections, args.overwrite_output_dir, lambda resume: build_report(args))


ARGUMENT_TYPES = (AblationReportArguments,)  # what the YAML is parsed into


def main(report_args) -> dict:
    return write_ablation_report(report_args)


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
