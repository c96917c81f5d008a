"""``report.json`` (stable keys for scripts), ``report.md`` (tables) and one PNG bar chart per task."""

from __future__ import annotations

from pathlib import Path

from chimed_trl.runs import write_atomic, write_json

# Bulky per-record lists go to their own files, not into report.json.
DETAIL_KEYS = ("predictions", "outputs", "answers")


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


def render_markdown(summary: dict, settings: dict) -> str:
    lines = ["# Evaluation report", "", "## Settings", ""]
    lines += [f"- {k}: `{v}`" for k, v in settings.items()]
    if "choice" in summary:
        c = summary["choice"]
        lines += [
            "",
            "## Multiple-choice QA",
            "",
            f"Mode: {c['mode']}, {c['k_shot']}-shot. "
            f"Micro accuracy {100 * c['micro_accuracy']:.2f} ({c['correct']}/{c['total']}), "
            f"macro {100 * c['macro_accuracy']:.2f}.",
            "",
            "| subject | correct / total | accuracy |",
            "|---|---|---|",
        ]
        lines += [
            f"| {s} | {v['correct']}/{v['total']} | {100 * v['accuracy']:.2f} |" for s, v in c["per_subject"].items()
        ]
    if "ner" in summary:
        n = summary["ner"]
        lines += [
            "",
            "## NER",
            "",
            f"{n['documents']} documents, {n['k_shot']}-shot; unparsable output lines: {n['unparsable_lines']}.",
            "",
            "| scoring | precision | recall | F1 |",
            "|---|---|---|---|",
        ]
        for key in ("mention_type", "offset_strict"):
            m = n[key]
            lines.append(f"| {key} | {100 * m['precision']:.2f} | {100 * m['recall']:.2f} | {100 * m['f1']:.2f} |")
    if "dialogue" in summary:
        d = summary["dialogue"]
        names = list(d["scores"])
        lines += [
            "",
            "## Open QA / dialogue (character level, 0-100)",
            "",
            f"{d['records']} records.",
            "",
            "| " + " | ".join(names) + " |",
            "|" + "---|" * len(names),
            "| " + " | ".join(f"{d['scores'][k]:.2f}" for k in names) + " |",
        ]
        if any("paper_compat" in k for k in names):
            lines += [
                "",
                "*(paper_compat)* columns reproduce the ChiMed-GPT authors' BLEU over the characters of "
                "jieba-joined text, spaces included; they are not comparable with the clean BLEU columns.",
            ]
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
    return "\n".join(lines) + "\n"


def _charts(summary: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {}
    if "choice" in summary:
        bars["choice"] = {s: 100 * v["accuracy"] for s, v in summary["choice"]["per_subject"].items()}
    if "ner" in summary:
        bars["ner"] = {k: 100 * summary["ner"][k]["f1"] for k in ("mention_type", "offset_strict")}
    if "dialogue" in summary:
        bars["dialogue"] = summary["dialogue"]["scores"]
    if "scales" in summary:
        for scale, r in summary["scales"].items():
            bars[f"scale_{scale.lower()}"] = r["answer_distribution"]
    written = []
    for name, values in bars.items():
        fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(values) + 2), 3.2))
        ax.bar(range(len(values)), list(values.values()), color="#4C72B0")
        ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
        ax.set_title(name)
        fig.tight_layout()
        path = out / f"chart_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path.name)
    return written


def write_report(results: dict, settings: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary, details = _split_details(results)
    charts = _charts(summary, out)
    payload = {"settings": settings, "tasks": summary, "charts": charts}
    write_json(out / "report.json", payload)
    write_json(out / "details.json", details)
    write_atomic(out / "report.md", render_markdown(summary, settings))
    return payload
