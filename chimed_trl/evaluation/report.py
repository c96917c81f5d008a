"""``report.json`` (stable keys for scripts), ``report.md`` (tables, the paper's reference rows, charts) and
one PNG bar chart per task, linked from ``report.md``.

The reference rows are the published ChiMed-GPT figures shipped in ``paper_reference.json`` (source:
arXiv 2311.06025 / the authors' README, synlp/ChiMed-GPT), laid out as the paper's tables, with each
benchmark's denominator and the places where a comparison is not like for like.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from chimed_trl.runs import write_atomic, write_json

# Bulky per-record lists go to their own files, not into report.json.
DETAIL_KEYS = ("predictions", "outputs", "answers")
THIS_RUN = "**this run**"


@cache
def paper_reference() -> dict:
    """The paper's published tables (package data)."""
    return json.loads(resources.files("chimed_trl.evaluation").joinpath("paper_reference.json").read_text("utf-8"))


def _split_details(results: dict) -> tuple[dict, dict]:
    summary, details = {}, {}
    for task, value in results.items():
        if task == "scales":
            summary[task] = {s: {k: v for k, v in r.items() if k not in DETAIL_KEYS} for s, r in value.items()}
            details[task] = {s: r.get("answers", []) for s, r in value.items()}
        else:
            summary[task] = {k: v for k, v in value.items() if k not in DETAIL_KEYS}
            details[task] = {k: v for k, v in value.items() if k in DETAIL_KEYS}
    return summary, details


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def comparison(summary: dict, benchmarks: dict) -> dict:
    """The paper's tables with this run's figures in the column it was set beside (``report.json["paper"]``)."""
    ref = paper_reference()
    out: dict = {"source": ref["source"], "models": ref["models"], "this_run": {}}
    out["choice_accuracy"] = ref["choice_accuracy"]
    out["ner_f1"] = ref["ner_f1"]
    out["open_qa_chimed"], out["dialogue_mc"] = ref["open_qa_chimed"], ref["dialogue_mc"]
    if "choice" in summary and benchmarks.get("choice"):
        c = summary["choice"]
        out["this_run"][benchmarks["choice"]] = {
            "micro": 100 * c["micro_accuracy"],
            "macro": 100 * c["macro_accuracy"],
            "denominator": c["total"],
        }
    if "ner" in summary and benchmarks.get("ner"):
        out["this_run"][benchmarks["ner"]] = {"f1": 100 * summary["ner"]["mention_type"]["f1"]}
    if "dialogue" in summary and benchmarks.get("dialogue"):
        out["this_run"][benchmarks["dialogue"]] = summary["dialogue"]["scores"]
    return out


def _choice_reference(summary: dict, benchmark: str | None) -> list[str]:
    ref = paper_reference()["choice_accuracy"]
    names = list(ref)
    rows = [[m] + [_fmt(ref[b]["scores"][m]) for b in names] for m in paper_reference()["models"]]
    c = summary["choice"]
    micro, macro = 100 * c["micro_accuracy"], 100 * c["macro_accuracy"]
    run = f"{micro:.2f} micro ({c['correct']}/{c['total']}), {macro:.2f} macro"
    rows.append([THIS_RUN] + [run if b == benchmark else "—" for b in names])
    lines = ["", "### Paper reference (accuracy %, as published)", ""] + _table(["model", *names], rows)
    lines += ["", "Denominators and protocols:"] + [
        f"- **{b}**: {ref[b]['protocol']} {ref[b].get('denominator_notes', '')}".rstrip() for b in names
    ]
    lines += [
        "",
        "Like for like: the two API rows of C-Eval are macro averages over the two subjects while every other "
        "row is micro over 41 questions; compare a C-Eval run's *micro* figure with the local models and its "
        "*macro* figure with GPT-3.5-Turbo/GPT-4 (this run reports both). "
        + (
            f"This run sits in the {benchmark} column."
            if benchmark
            else "Set `paper_choice_benchmark` (or a `choice_subjects` preset) to place this run in a column."
        ),
    ]
    return lines


def _ner_reference(summary: dict, benchmark: str | None) -> list[str]:
    ref = paper_reference()["ner_f1"]
    names = [k for k in ref if k != "protocol"]
    rows = [[m] + [_fmt(ref[b][m]) for b in names] for m in paper_reference()["models"]]
    f1 = 100 * summary["ner"]["mention_type"]["f1"]
    rows.append([THIS_RUN] + [f"{f1:.2f}" if b == benchmark else "—" for b in names])
    return (
        ["", "### Paper reference (entity F1 %, as published)", ""]
        + _table(["model", *names], rows)
        + [
            "",
            f"Protocol: {ref['protocol']} This run: mention/type F1 over "
            f"{summary['ner']['documents']} documents, {summary['ner']['k_shot']}-shot.",
        ]
    )


def _dialogue_reference(summary: dict, benchmark: str | None) -> list[str]:
    lines: list[str] = []
    scores = summary["dialogue"]["scores"]
    for key, title in (("open_qa_chimed", "ChiMed open QA"), ("dialogue_mc", "MC multi-turn dialogue")):
        ref = paper_reference()[key]
        rows = [[m] + [_fmt(v) for v in ref["scores"][m]] for m in paper_reference()["models"]]
        if key == benchmark:
            clean = [scores.get(k) for k in ref["metrics"]]
            rows.append([f"{THIS_RUN} (clean BLEU)"] + [_fmt(v) for v in clean])
            if "BLEU-1 (paper_compat)" in scores:
                compat = [scores["BLEU-1 (paper_compat)"], scores["BLEU-2 (paper_compat)"]] + clean[2:]
                rows.append([f"{THIS_RUN} (paper_compat BLEU)"] + [_fmt(v) for v in compat])
        lines += ["", f"### Paper reference: {title} (%, as published)", ""] + _table(["model", *ref["metrics"]], rows)
        lines += ["", f"Protocol: {ref['protocol']}" + (f" {ref['notes']}" if ref.get("notes") else "")]
    lines += [
        "",
        "Like for like: the paper's BLEU columns were computed the authors' way (the `paper_compat` row), not as "
        "clean character BLEU; their ROUGE split space-wrapped CJK characters, i.e. character level, as here. "
        + (
            f"This run sits in the {benchmark} table."
            if benchmark
            else "Set `paper_dialogue_benchmark` to place this run in a table."
        ),
    ]
    return lines


def render_markdown(summary: dict, settings: dict, charts: dict | None = None, benchmarks: dict | None = None) -> str:
    charts, benchmarks = charts or {}, benchmarks or {}
    lines = ["# Evaluation report", "", "## Settings", ""]
    lines += [f"- {k}: `{v}`" for k, v in settings.items()]
    if "choice" in summary:
        c = summary["choice"]
        shots = c["shots_used"]
        used = f"{shots['min']}" if shots["min"] == shots["max"] else f"{shots['min']}-{shots['max']}"
        lines += [
            "",
            "## Multiple-choice QA",
            "",
            f"Mode: {c['mode']}, {used}-shot (asked: {c['k_shot']}). "
            f"Micro accuracy {100 * c['micro_accuracy']:.2f} ({c['correct']}/{c['total']}), "
            f"macro (mean of subjects) {100 * c['macro_accuracy']:.2f}.",
            "",
        ]
        lines += _table(
            ["subject", "correct / total", "accuracy"],
            [[s, f"{v['correct']}/{v['total']}", f"{100 * v['accuracy']:.2f}"] for s, v in c["per_subject"].items()],
        )
        lines += _choice_reference(summary, benchmarks.get("choice"))
    if "ner" in summary:
        n = summary["ner"]
        lines += [
            "",
            "## NER",
            "",
            f"{n['documents']} documents, {n['k_shot']}-shot (asked: {n.get('k_shot_asked', n['k_shot'])}); "
            f"unparsable output lines: {n['unparsable_lines']}.",
            "",
        ]
        lines += _table(
            ["scoring", "precision", "recall", "F1"],
            [
                [key] + [f"{100 * n[key][m]:.2f}" for m in ("precision", "recall", "f1")]
                for key in ("mention_type", "offset_strict")
            ],
        )
        lines += _ner_reference(summary, benchmarks.get("ner"))
    if "dialogue" in summary:
        d = summary["dialogue"]
        names = list(d["scores"])
        lines += ["", "## Open QA / dialogue (character level, 0-100)", "", f"{d['records']} records.", ""]
        lines += _table(names, [[f"{d['scores'][k]:.2f}" for k in names]])
        lines += [
            "",
            "Clean BLEU is corpus-level over characters (whitespace ignored), cumulative, brevity penalty, no "
            "smoothing; ROUGE is the per-pair character-level F-measure, averaged.",
        ]
        if any("paper_compat" in k for k in names):
            lines += [
                "",
                "*(paper_compat)* columns reproduce the ChiMed-GPT authors' BLEU: NLTK `corpus_bleu` on strings "
                "with every CJK character wrapped in spaces, iterated character by character (spaces included); "
                "their 'BLEU-1' is a 2-gram BLEU (weights 0.5, 0.5), 'BLEU-2' a 3-gram one. They run higher than "
                "clean BLEU because the padding spaces (2 of every 3 tokens) and the space-character n-grams match "
                "almost for free. Do not compare them with the clean columns.",
            ]
        lines += _dialogue_reference(summary, benchmarks.get("dialogue"))
    if "scales" in summary:
        lines += ["", "## Attitude scales", ""]
        for scale, r in summary["scales"].items():
            score = r.get("total", r.get("subscales"))
            lines += [
                f"- **{scale}**: {score} (answered {r['answered']}/{r['items']}); answer distribution "
                f"{r['answer_distribution']}; position agreement with reversed options "
                f"{100 * r['position_agreement']:.1f}%"
                + (" — **degenerate: one letter for most items**" if r["degenerate"] else "")
            ]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{name}]({path})" for name, path in charts.items()]
    return "\n".join(lines) + "\n"


def _chart_data(summary: dict) -> dict[str, tuple[dict, str, str]]:
    """name -> (bars, x-axis label, y-axis label)."""
    bars: dict[str, tuple[dict, str, str]] = {}
    if "choice" in summary:
        per = {s: 100 * v["accuracy"] for s, v in summary["choice"]["per_subject"].items()}
        bars["choice"] = (per, "subject", "accuracy (%)")
    if "ner" in summary:
        f1 = {k: 100 * summary["ner"][k]["f1"] for k in ("mention_type", "offset_strict")}
        bars["ner"] = (f1, "scoring", "F1 (%)")
    if "dialogue" in summary:
        bars["dialogue"] = (summary["dialogue"]["scores"], "metric", "score (0-100)")
    for scale, r in summary.get("scales", {}).items():
        bars[f"scale_{scale.lower()}"] = (r["answer_distribution"], "option letter chosen", "items")
    return bars


def _charts(summary: dict, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    for name, (values, xlabel, ylabel) in _chart_data(summary).items():
        fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(values) + 2), 3.4))
        ax.bar(range(len(values)), list(values.values()), color="#4C72B0")
        ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        fig.tight_layout()
        path = out / f"chart_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[name] = path.name
    return written


def headline_metrics(summary: dict, settings: dict) -> dict:
    """The flat figures ``metrics.json`` holds (written last: its presence = the evaluation finished)."""
    metrics: dict = {"wall_time_s": settings["wall_time_s"]}
    if "choice" in summary:
        metrics.update(
            choice_micro_accuracy=summary["choice"]["micro_accuracy"],
            choice_macro_accuracy=summary["choice"]["macro_accuracy"],
            choice_total=summary["choice"]["total"],
        )
    if "ner" in summary:
        metrics["ner_f1"] = summary["ner"]["mention_type"]["f1"]
    if "dialogue" in summary:
        metrics.update({f"dialogue_{k}": v for k, v in summary["dialogue"]["scores"].items()})
    for scale, r in summary.get("scales", {}).items():
        metrics[f"scale_{scale}"] = r.get("total", r.get("subscales"))
    return metrics


def write_report(results: dict, settings: dict, out: Path, benchmarks: dict | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary, details = _split_details(results)
    charts = _charts(summary, out)
    payload = {
        "settings": settings,
        "tasks": summary,
        "charts": list(charts.values()),
        "paper": comparison(summary, benchmarks or {}),
    }
    write_json(out / "details.json", details)
    write_atomic(out / "report.md", render_markdown(summary, settings, charts, benchmarks))
    write_json(out / "report.json", payload)
    return payload
