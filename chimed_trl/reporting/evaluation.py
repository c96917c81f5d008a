"""The evaluation report: ``report.json`` (stable keys for scripts), ``report.md`` (tables, the paper's reference
rows, charts) and one PNG bar chart per task, linked from ``report.md``.

The paper's tables and the rules for placing a figure in them are :mod:`chimed_trl.reporting.paper`'s.
Each task section links its ``items/<task>.jsonl`` and lists its 5 worst items.
"""

from __future__ import annotations

from pathlib import Path

from chimed_trl.reporting.charts import bars
from chimed_trl.reporting.markdown import cell, table
from chimed_trl.reporting.paper import (
    choice_reference,
    comparison,
    dialogue_reference,
    ner_reference,
)
from chimed_trl.runfiles import write_atomic, write_json

# Bulky per-record lists go to their own files, not into report.json.
DETAIL_KEYS = ("predictions", "outputs", "answers", "items")
WORST = 5


def _split_details(results: dict) -> tuple[dict, dict]:
    summary, details = {}, {}
    for task, value in results.items():
        if task == "scales":
            # a scale's "items" is its item count; its per-item records are its "answers"
            summary[task] = {s: {k: v for k, v in r.items() if k != "answers"} for s, r in value.items()}
            details[task] = {s: r.get("answers", []) for s, r in value.items()}
        else:
            summary[task] = {k: v for k, v in value.items() if k not in DETAIL_KEYS}
            details[task] = {k: v for k, v in value.items() if k in DETAIL_KEYS}
    return summary, details


def _coverage_line(result: dict) -> list[str]:
    """What the figures were computed on, said before them: all items or 'N of M', and stand-in data."""
    coverage = result.get("coverage")
    if not coverage:
        return []
    scope = (
        f"all {coverage['available']} items"
        if coverage["scored"] == coverage["available"]
        else f"**{coverage['scored']} of {coverage['available']} items** (limit: {coverage['limit']})"
    )
    origin = "; **bundled sample, not the benchmark**" if coverage.get("bundled_sample") else ""
    return [f"Scored on {scope}{origin}.", ""]


def task_items(task: str, result: dict) -> list[dict]:
    """A task's item records (the scales keep theirs per scale, as ``answers``)."""
    if task != "scales":
        return result.get("items", [])
    return [
        {"id": f"{scale}-{a['item']}", "subject": scale, **a}
        for scale, r in result.items()
        for a in r.get("answers", [])
    ]


def worst_items(task: str, result: dict, n: int = WORST) -> list[dict]:
    """The ``n`` worst items: wrong first, then the lowest gold probability (letter scoring) or per-item metric."""
    items = task_items(task, result)
    if task == "scales" or not items:
        return []
    if task == "choice":
        key = lambda i: (i["correct"], (i.get("probabilities") or {}).get(i["gold"], 0.0))  # noqa: E731
    else:
        key = lambda i: next(iter(i["metric"].values()))  # noqa: E731
    return sorted(items, key=key)[:n]


def _items_section(task: str, worst: dict) -> list[str]:
    lines = ["", f"Per-item records (exact prompt, gold, prediction): [items/{task}.jsonl](items/{task}.jsonl)."]
    rows = worst.get(task) or []
    if not rows:
        return lines
    lines += ["", f"{len(rows)} worst items:", ""]
    cells = []
    for item in rows:
        metric = item.get("metric") or {  # choice: what the letter scoring gave the gold, or how the answer was read
            key: value
            for key, value in (
                ("gold probability", (item.get("probabilities") or {}).get(item["gold"])),
                ("read as", item.get("extraction")),
            )
            if value is not None
        }
        cells.append(
            [
                cell(item["id"]),
                cell(item.get("subject") or ""),
                cell(item["gold"]),
                cell(item["prediction"]),
                cell(metric),
            ]
        )
    return lines + table(["id", "subject", "gold", "prediction", "metric"], cells)


def render_markdown(
    summary: dict,
    settings: dict,
    charts: dict | None = None,
    benchmarks: dict | None = None,
    worst: dict | None = None,
) -> str:
    charts, benchmarks, worst = charts or {}, benchmarks or {}, worst or {}
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
            *_coverage_line(c),
            f"Mode: {c['mode']}, prompt format {c.get('prompt_format')}, {used}-shot (asked: {c['k_shot']}). "
            f"Micro accuracy {100 * c['micro_accuracy']:.2f} ({c['correct']}/{c['total']}), "
            f"macro (mean of subjects) {100 * c['macro_accuracy']:.2f}.",
            "",
        ]
        if "fallback_guesses" in c:
            lines += [
                f"Answers read by CMMLU's rule: {c['fallback_guesses']} of {c['total']} were the seeded fallback "
                f"guess (no pattern matched); correct without the guesses: {c['correct_without_guesses']}. "
                f"Unanswered: {c['unanswered']}.",
                "",
            ]
        lines += table(
            ["subject", "correct / total", "accuracy"],
            [[s, f"{v['correct']}/{v['total']}", f"{100 * v['accuracy']:.2f}"] for s, v in c["per_subject"].items()],
        )
        lines += _items_section("choice", worst)
        lines += choice_reference(summary, benchmarks.get("choice"))
    if "ner" in summary:
        n = summary["ner"]
        lines += [
            "",
            "## NER",
            "",
            *_coverage_line(n),
            f"{n['documents']} documents, {n['k_shot']}-shot (asked: {n.get('k_shot_asked', n['k_shot'])}); "
            f"unparsable output lines: {n['unparsable_lines']}.",
            "",
        ]
        lines += table(
            ["scoring", "precision", "recall", "F1"],
            [
                [key] + [f"{100 * n[key][m]:.2f}" for m in ("precision", "recall", "f1")]
                for key in ("mention_type", "offset_strict", "paper_compat")
            ],
        )
        lines += [
            "",
            "*paper_compat* counts every output line as a prediction (blank lines, `无` and unparsable lines "
            "included), as the authors did; it is the only row comparable with the paper's NER column.",
        ]
        lines += _items_section("ner", worst)
        lines += ner_reference(summary, benchmarks.get("ner"))
    if "dialogue" in summary:
        d = summary["dialogue"]
        names = list(d["scores"])
        lines += [
            "",
            "## Open QA / dialogue (character level, 0-100)",
            "",
            *_coverage_line(d),
            f"{d['records']} records.",
            "",
        ]
        comparable = ["yes" if "(paper_compat)" in k else "no" for k in names]
        lines += table(names, [[f"{d['scores'][k]:.2f}" for k in names], comparable])
        lines += ["", "Last row: whether the column is computed as the paper's was (comparable with its tables)."]
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
                "",
                "*(paper_compat)* ROUGE is the `rouge` package (1.0.1) itself on the same space-wrapped strings, as "
                "the authors computed it: whitespace tokens (a Latin word or digit run is one token), unique n-grams, "
                "summary-level LCS. The clean ROUGE is per-character rouge-score, a different metric."
                + (
                    f" {d['paper_compat_empty_pairs']} pair(s) the package cannot score (empty) count as 0."
                    if d.get("paper_compat_empty_pairs")
                    else ""
                ),
            ]
        lines += _items_section("dialogue", worst)
        lines += dialogue_reference(summary, benchmarks.get("dialogue"))
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
        lines += ["", "Per-item answers (exact prompt, letter, level): [items/scales.jsonl](items/scales.jsonl)."]
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
        metrics["ner_f1_paper_compat"] = summary["ner"]["paper_compat"]["f1"]
    if "dialogue" in summary:
        metrics.update({f"dialogue_{k}": v for k, v in summary["dialogue"]["scores"].items()})
    for scale, r in summary.get("scales", {}).items():
        metrics[f"scale_{scale}"] = r.get("total", r.get("subscales"))
    return metrics


def write_report(results: dict, settings: dict, out: Path, benchmarks: dict | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary, details = _split_details(results)
    worst = {task: worst_items(task, result) for task, result in results.items()}
    charts = {name: bars(values, out / f"chart_{name}.png", name, ylabel, xlabel)
              for name, (values, xlabel, ylabel) in _chart_data(summary).items()}  # fmt: skip
    payload = {
        "settings": settings,
        "tasks": summary,
        "charts": list(charts.values()),
        "paper": comparison(summary, benchmarks or {}),
    }
    write_json(out / "details.json", details)
    write_atomic(out / "report.md", render_markdown(summary, settings, charts, benchmarks, worst))
    write_json(out / "report.json", payload)
    return payload
