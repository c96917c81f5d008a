"""The pipeline's report: ``report.md`` + ``report.json`` + PNG charts in the pipeline's ``output_dir``.

Sections, each present only when its stage ran (a missing stage is not an error):

- training stages (any stage whose ``metrics.json`` has ``loss_first``/``loss_last``): loss first -> last and a
  loss curve read from the log history (``metrics.json`` ``log_history``, else ``trainer_state.json`` in the
  stage folder or its newest ``checkpoint-*``);
- the reward model (recipe ``reward``): pairwise accuracy and mean reward by rank position, read from its
  ``metrics.json`` by key (``eval.pairwise_accuracy``, ``eval.reward_rank_<r>``; ``train.*`` when nothing was held out);
- rejection sampling (recipe ``rejection_sampling``): mean reward by round from ``round_<r>/stats.json``
  (``reward_mean``, ``kept_reward_mean``);
- evaluation (recipe ``evaluate``): the evaluated policies side by side from each ``report.json``, and the
  paper's reference rows when a report carries them;
- wall time per stage, from the runner's ``pipeline_state.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chimed_trl.reporting.charts import bars, pyplot, save
from chimed_trl.reporting.markdown import table
from chimed_trl.reporting.paper import paper_reference, published_scores, reference_table
from chimed_trl.runfiles import write_atomic, write_json


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------- loss curves


def loss_history(stage_dir: Path, metrics: dict | None) -> list[tuple[int, float]]:
    """(step, loss) pairs of the training log, from the first of: metrics.json, trainer_state.json, a checkpoint."""
    candidates: list[Any] = []
    if metrics:
        candidates.append(metrics.get("log_history") or metrics.get("loss_history"))
    candidates.append((_load(stage_dir / "trainer_state.json") or {}).get("log_history"))
    checkpoints = sorted(
        stage_dir.glob("checkpoint-*"),
        key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
    )
    if checkpoints:
        candidates.append((_load(checkpoints[-1] / "trainer_state.json") or {}).get("log_history"))
    for history in candidates:
        if not isinstance(history, list):
            continue
        points = [
            (int(h.get("step", i + 1)), float(h["loss"]))
            for i, h in enumerate(history)
            if isinstance(h, dict) and _number(h.get("loss"))
        ]
        if points:
            return points
    return []


def training_section(name: str, stage_dir: Path, metrics: dict) -> dict | None:
    if not (_number(metrics.get("loss_first")) and _number(metrics.get("loss_last"))):
        return None
    return {
        "stage": name,
        "steps": metrics.get("steps"),
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "loss_curve": loss_history(stage_dir, metrics),
    }


# ---------------------------------------------------------------- reward model

RANK_PREFIX = "reward_rank_"  # the listwise trainer's mean reward per rank value: reward_rank_0, reward_rank_1, ...


def reward_section(metrics: dict) -> dict | None:
    """Pairwise accuracy and mean reward by rank from the reward stage's ``metrics.json``: its ``eval`` figures
    (held-out: the ``test_size`` split or ``eval_datasets``), else its ``train`` figures, never a mix."""
    for split in ("eval", "train"):
        figures = metrics.get(split)
        if not isinstance(figures, dict):
            continue
        ranks = sorted(
            int(k[len(RANK_PREFIX) :])
            for k in figures
            if k.startswith(RANK_PREFIX) and k[len(RANK_PREFIX) :].isdigit()
        )
        accuracy = figures.get("pairwise_accuracy")
        if not _number(accuracy) and not ranks:
            continue
        return {
            "pairwise_accuracy": float(accuracy) if _number(accuracy) else None,
            "pairwise_accuracy_key": f"{split}.pairwise_accuracy",
            "reward_by_rank": [float(figures[f"{RANK_PREFIX}{r}"]) for r in ranks],
        }
    return None


# ---------------------------------------------------------------- rejection sampling


def _round_number(stats_path: Path) -> int:
    return int(stats_path.parent.name.removeprefix("round_"))


def rs_section(stage_dir: Path) -> dict | None:
    """Mean reward by round (all samples, and the kept ones) from each finished round's ``round_<r>/stats.json``."""
    rounds = []
    for path in sorted(stage_dir.glob("round_*/stats.json"), key=_round_number):
        stats = _load(path)
        if isinstance(stats, dict):
            mean, kept = stats.get("reward_mean"), stats.get("kept_reward_mean")
            rounds.append(
                {
                    "round": _round_number(path),
                    "mean_reward": float(mean) if _number(mean) else None,
                    "mean_reward_kept": float(kept) if _number(kept) else None,
                }
            )
    return {"rounds": rounds} if rounds else None


# ---------------------------------------------------------------- evaluation


def eval_row(report: dict) -> dict[str, float]:
    """One policy's headline figures (percent): choice accuracy, NER F1, dialogue text scores."""
    tasks = report.get("tasks", {})
    row: dict[str, float] = {}
    if "choice" in tasks and _number(tasks["choice"].get("micro_accuracy")):
        row["choice accuracy"] = 100 * tasks["choice"]["micro_accuracy"]
    ner = tasks.get("ner", {})
    if isinstance(ner.get("mention_type"), dict) and _number(ner["mention_type"].get("f1")):
        row["NER F1"] = 100 * ner["mention_type"]["f1"]
    for metric, value in (tasks.get("dialogue", {}).get("scores") or {}).items():
        if _number(value):
            row[metric] = float(value)
    return row


def paper_tables(runs: dict[str, dict]) -> list[str]:
    """The paper's published tables (``chimed_trl/evaluation/paper_reference.json``), one row per evaluated
    policy added in the column its evaluation was placed in (``report.json["paper"]["this_run"]``)."""
    if not any(runs.values()):
        return []
    ref = paper_reference()
    lines = ["## Paper reference rows (published, percent)", "", ref["source"], ""]
    choice = ref["choice_accuracy"]
    rows = []
    for stage, run in runs.items():
        cells = [f"{run[b]['micro']:.2f} (n={run[b]['denominator']})" if b in run else "—" for b in choice]
        rows.append([f"{stage} (this pipeline)", *cells])
    lines += ["Multiple choice, accuracy:", ""] + reference_table(
        list(choice), lambda m, b: choice[b]["scores"][m], rows
    )
    lines += [""] + [
        f"- {b}: {choice[b]['protocol']} {choice[b].get('denominator_notes', '')}".rstrip() for b in choice
    ]
    ner = {k: v for k, v in ref["ner_f1"].items() if k != "protocol"}
    rows = [
        [f"{stage} (this pipeline)", *(run[b]["f1"] if b in run else "—" for b in ner)] for stage, run in runs.items()
    ]
    lines += ["", "NER, entity F1:", ""] + reference_table(list(ner), lambda m, b: ner[b][m], rows)
    lines += ["", f"- {ref['ner_f1']['protocol']}"]
    for key, title in (("open_qa_chimed", "ChiMed open QA"), ("dialogue_mc", "MC multi-turn dialogue")):
        ref_table = ref[key]
        rows = []
        for stage, run in runs.items():
            if key in run:  # placed only when computed as the paper's: the authors' BLEU and ROUGE (paper_compat)
                compat = [run[key].get(f"{m} (paper_compat)") for m in ref_table["metrics"]]
                rows.append([f"{stage} (paper_compat)", *compat])
        lines += ["", f"{title}:", ""] + reference_table(ref_table["metrics"], published_scores(ref_table), rows)
        lines += ["", f"- {ref_table['protocol']}"]
    lines += [
        "",
        "Not like for like: the tiny demo scores the bundled sample files, not the paper's benchmarks (the rows "
        "show the layout a real run fills in); the two API models' C-Eval figures are macro averages over two "
        "subjects, every other C-Eval row is micro over 41 questions; the MC dialogue training split was in "
        "ChiMed-GPT's SFT mix; the paper's BLEU and ROUGE are the authors' computations (`paper_compat`: NLTK BLEU and "
        "the `rouge` package), not clean character BLEU/ROUGE. An evaluation on limited or stand-in data is never "
        "placed in these columns (its report says why).",
        "",
    ]
    return lines


# ---------------------------------------------------------------- charts and Markdown


def chart_loss(section: dict, out: Path) -> str | None:
    if len(section["loss_curve"]) < 2:
        return None
    plt = pyplot()
    steps, losses = zip(*section["loss_curve"])
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(steps, losses, marker=".", color="#4C72B0")
    ax.set(title=f"{section['stage']}: training loss", xlabel="step", ylabel="loss")
    return save(fig, out / f"loss_{section['stage']}.png")


def chart_rs(section: dict, out: Path) -> str | None:
    rounds = [r for r in section["rounds"] if r["mean_reward"] is not None]
    if not rounds:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([r["round"] for r in rounds], [r["mean_reward"] for r in rounds], marker="o", label="all samples")
    kept = [r for r in rounds if r["mean_reward_kept"] is not None]
    if kept:
        ax.plot([r["round"] for r in kept], [r["mean_reward_kept"] for r in kept], marker="s", label="kept (top-k)")
    ax.set(title="rejection sampling: reward by round", xlabel="round", ylabel="mean reward")
    ax.legend()
    return save(fig, out / "rs_reward_by_round.png")


def collect(pipe, state: dict) -> dict:
    """Everything the report shows, from the files the stages wrote."""
    data: dict = {"config": str(pipe.path), "output_dir": str(pipe.output_dir), "training": [], "evaluation": []}
    data["wall_time"] = [
        {"stage": s.name, "wall_time_s": state.get("stages", {}).get(s.name, {}).get("wall_time_s")}
        for s in pipe.stages
        if s.name in state.get("stages", {})
    ]
    for stage in pipe.stages:
        stage_dir = pipe.stage_dir(stage.name)
        metrics = _load(stage_dir / "metrics.json")
        metrics = metrics if isinstance(metrics, dict) else {}
        section = training_section(stage.name, stage_dir, metrics)
        if section and stage.recipe != "reward":
            data["training"].append(section)
        if stage.recipe == "reward" and metrics:
            reward = reward_section(metrics)
            if section:
                data["training"].append(section)
            if reward:
                data["reward"] = {"stage": stage.name, **reward}
        if stage.recipe == "rejection_sampling":
            rs = rs_section(stage_dir)
            if rs:
                data["rejection_sampling"] = {"stage": stage.name, **rs}
        if stage.recipe == "evaluate":
            report = _load(stage_dir / "report.json")
            if isinstance(report, dict):
                model = (report.get("settings") or {}).get("model")
                data["evaluation"].append({"stage": stage.name, "model": model, "scores": eval_row(report)})
                data.setdefault("paper_runs", {})[stage.name] = (report.get("paper") or {}).get("this_run") or {}
    return data


def render(data: dict, charts: dict[str, str]) -> str:
    lines = [
        "# Pipeline report",
        "",
        f"Config: `{data['config']}`; outputs under `{data['output_dir']}/<stage>/`.",
        "",
    ]
    if data["training"]:
        lines += ["## Training loss", ""]
        lines += table(
            ["stage", "steps", "loss first", "loss last"],
            [[s["stage"], s["steps"], s["loss_first"], s["loss_last"]] for s in data["training"]],
        )
        lines.append("")
        lines += [f"![{s['stage']} loss]({charts[s['stage']]})" for s in data["training"] if s["stage"] in charts]
        lines.append("")
    if "reward" in data:
        r = data["reward"]
        lines += ["## Reward model", ""]
        if r["pairwise_accuracy"] is not None:
            lines.append(
                f"Held-out pairwise accuracy: **{100 * r['pairwise_accuracy']:.1f}%** "
                f"(`{r['pairwise_accuracy_key']}`; chance is 50%)."
            )
        if r["reward_by_rank"]:
            lines += ["", "Mean reward by rank position (0 = best):", ""]
            lines += table([str(i) for i in range(len(r["reward_by_rank"]))], [r["reward_by_rank"]])
        if "reward_by_rank" in charts:
            lines += ["", f"![reward by rank]({charts['reward_by_rank']})"]
        lines.append("")
    if "rejection_sampling" in data:
        lines += ["## Rejection sampling", ""]
        lines += table(
            ["round", "mean reward (all samples)", "mean reward (kept)"],
            [[r["round"], r["mean_reward"], r["mean_reward_kept"]] for r in data["rejection_sampling"]["rounds"]],
        )
        if "reward_by_round" in charts:
            lines += ["", f"![reward by round]({charts['reward_by_round']})"]
        lines.append("")
    if data["evaluation"]:
        metrics = list(dict.fromkeys(k for e in data["evaluation"] for k in e["scores"]))
        lines += ["## Evaluation (percent)", ""]
        rows = [[f"{e['stage']} (`{e['model']}`)", *(e["scores"].get(m) for m in metrics)] for e in data["evaluation"]]
        lines += table(["policy", *metrics], rows)
        lines.append("")
    lines += paper_tables(data.get("paper_runs") or {})
    if data["wall_time"]:
        lines += ["## Wall time", ""]
        lines += table(["stage", "seconds"], [[w["stage"], w["wall_time_s"]] for w in data["wall_time"]])
        total = sum(w["wall_time_s"] or 0 for w in data["wall_time"])
        lines += ["", f"Total: {total:.1f} s (stages run in this output directory, including earlier runs)."]
    return "\n".join(lines) + "\n"


def write_report(pipe, state: dict) -> Path:
    out = pipe.output_dir
    data = collect(pipe, state)
    charts: dict[str, str] = {}
    for section in data["training"]:
        name = chart_loss(section, out)
        if name:
            charts[section["stage"]] = name
    if data.get("reward", {}).get("reward_by_rank"):
        values = data["reward"]["reward_by_rank"]
        labels = [str(i) for i in range(len(values))]
        charts["reward_by_rank"] = bars(
            dict(zip(labels, values)),
            out / "reward_by_rank.png",
            "reward model: reward by rank",
            "mean reward",
            "rank",
        )
    if "rejection_sampling" in data:
        name = chart_rs(data["rejection_sampling"], out)
        if name:
            charts["reward_by_round"] = name
    data["charts"] = sorted(charts.values())
    write_json(out / "report.json", data)
    return write_atomic(out / "report.md", render(data, charts))
