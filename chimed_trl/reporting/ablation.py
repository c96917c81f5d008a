"""The reward-model ablation's report: the accuracy chart and the Markdown tables (binary (a) vs listwise (b)).

The figures come from :mod:`chimed_trl.stages.ablation_report`, which reads them from the runs' own files.
"""

from __future__ import annotations

from pathlib import Path

from chimed_trl.reporting.charts import pyplot, save
from chimed_trl.reporting.markdown import fmt, table
from chimed_trl.reporting.paper import PAPER_MODEL

CHART = "reward_ablation.png"
ARMS = (("binary", "(a) binary pairs, pairwise loss"), ("listwise", "(b) augmented lists, listwise loss"))
# The paper's one reward-model figure: it is stated in the text (no table), so it is shipped here with its source.
PAPER_OVERFIT = {
    "train_accuracy": 0.98,
    "steps": 200,
    "source": "Tian et al., ChiMed-GPT, arXiv 2311.06025, reward-model section: the binary accepted-vs-rejected task "
    "reached 98% training accuracy in about 200 steps (their reason to augment the pairs into ranked lists)",
}


def chart(arms: list[dict], overfit_accuracy: float, out: Path) -> str:
    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    # (a) in large circles under (b)'s dots: where the curves coincide both stay visible
    for colour, marker, (arm, label) in zip(("tab:red", "tab:blue"), ("o", "."), ARMS):
        data = next(a for a in arms if a["arm"] == arm)
        for points, style, what in ((data["heldout_curve"], "-", "held-out"), (data["train_curve"], "--", "train")):
            if points:
                ax.plot(*zip(*points), style, color=colour, marker=marker, label=f"{label}: {what}")
    ax.axhline(overfit_accuracy, color="grey", linewidth=0.8, linestyle=":", label=f"{overfit_accuracy:.0%} train")
    ax.set_xlabel("training step")
    ax.set_ylabel("pairwise accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Reward models on the same held-out original pairs")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, out / CHART)


def _percent(value: float | None) -> str:
    """A fraction (accuracy) as a percentage with one decimal; a missing one as the tables' "—"."""
    return f"{value:.1%}" if isinstance(value, float) and value == value else fmt(value)


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def rewardtable(arms: list[dict], overfit_accuracy: float) -> list[str]:
    header = ["reward model", "loss", "steps", f"steps to {overfit_accuracy:.0%} train acc.", "best held-out acc.",
              "final held-out acc.", "final held-out margin", "final train acc."]  # fmt: skip
    rows = []
    for arm, label in ARMS:
        a = next(x for x in arms if x["arm"] == arm)
        reached = a["steps_to_overfit"]
        rows.append([
            label, str(a["loss_type"]), str(a["steps"]), "not reached" if reached is None else str(reached),
            f"{_percent(a['best_heldout_accuracy'])} (step {a['best_heldout_step']})",
            _percent(a["final_heldout_accuracy"]), fmt(a["final_heldout_margin"], 3), _percent(a["final_train_accuracy"]),
        ])  # fmt: skip
    paper = PAPER_OVERFIT
    rows.append(["paper: binary (Ziya2-13B, CMD-Reward)", "—", "—", f"~{paper['steps']}", "—", "—", "—",
                 f"{paper['train_accuracy']:.0%}"])  # fmt: skip
    return table(header, rows)


def ranktable(arms: list[dict]) -> list[str]:
    ranks = sorted({r for a in arms for r in {**a["heldout_reward_by_rank"], **a["train_reward_by_rank"]}})
    rows = []
    for arm, label in ARMS:
        a = next(x for x in arms if x["arm"] == arm)
        for where, values in (
            ("held-out pairs", a["heldout_reward_by_rank"]),
            ("train sample", a["train_reward_by_rank"]),
        ):
            rows.append([label, where] + [fmt(values.get(r), 3) for r in ranks])
    return table(["reward model", "scored on"] + [r.replace("reward_rank_", "rank ") for r in ranks], rows)


def downstreamtable(data: dict) -> list[str]:
    header = ["task (benchmark metric, %)", "SFT", "RS with (a)", "Δ (a)", "RS with (b)", "Δ (b)",
              f"paper: {PAPER_MODEL}"]  # fmt: skip
    rows = [
        [
            r["task"],
            fmt(r["sft"]),
            fmt(r["rs_binary"]),
            _signed(r["delta_binary"]),
            fmt(r["rs_listwise"]),
            _signed(r["delta_listwise"]),
            fmt(r["paper"]) if r["comparable"] else "not comparable (limited or stand-in data)",
        ]
        for r in data["rows"]
    ]
    return table(header, rows)


def render(args, arms: list[dict], n_pairs: int, data: dict | None) -> str:
    lines = ["# Reward-model ablation: binary pairs (a) vs augmented ranked lists (b)", ""]
    if args.note:
        lines += [f"> {args.note}", ""]
    scored = arms[0]["heldout_scored"]
    dropped = f"; {n_pairs - scored} too long for max_length, dropped in both" if scored not in (None, n_pairs) else ""
    lines += [
        f"Both reward models start from the same SFT model and are scored on the same {n_pairs} held-out original "
        f"pairs (accepted vs rejected{dropped}; identical pair ids, checked), whatever they train on. Train accuracy is "
        "measured on a fixed sample of each run's own training records (pairs for (a), ranked lists, all ordered "
        "pairs, for (b)). Curves and figures are read from the trainers' log histories (`metrics.json`).",
        "",
        f"![held-out and train accuracy]({CHART})",
        "",
        "## Reward models",
        "",
        *rewardtable(arms, args.overfit_accuracy),
        "",
        f"Paper figure: {PAPER_OVERFIT['source']}.",
        "",
        "### Mean reward by rank position (final model)",
        "",
        *ranktable(arms),
        "",
    ]
    if data is None:
        lines += ["## Downstream", "", "Not evaluated (give eval_sft, eval_rs_binary and eval_rs_listwise).", ""]
        return "\n".join(lines)
    lines += [
        "## Downstream: rejection sampling with each reward model (RS minus SFT)",
        "",
        *downstreamtable(data),
        "",
        f"The paper column is the published {PAPER_MODEL} figure (its whole regime: pre-training, SFT and rejection "
        "sampling, 13B), beside for scale; the paper publishes no rejection-sampling ablation, so no paper delta "
        f"exists. Source: {(data['paper_source'] or 'paper_reference.json').rstrip('.')}.",
        "",
    ]
    return "\n".join(lines)
