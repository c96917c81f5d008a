"""``report.json`` (stable keys for scripts), ``report.md`` (tables, the paper's reference rows, charts) and
one PNG bar chart per task, linked from ``report.md``.

The reference rows are the published ChiMed-GPT figures shipped in ``paper_reference.json`` (source:
arXiv 2311.06025 / the authors' README, synlp/ChiMed-GPT), laid out as the paper's tables, with each
benchmark's denominator and the places where a comparison is not like for like.

A run's figure is placed in a paper column only when it was computed like the paper's (:func:`placement`):
all items (no ``limit``), the benchmark's data (not a bundled sample), the benchmark's own prompt and
subject set, and the authors' metric (``paper_compat``). Otherwise the report says why beside the table.
Each task section links its ``items/<task>.jsonl`` and lists its 5 worst items.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from chimed_trl.runs import write_atomic, write_json

# Bulky per-record lists go to their own files, not into report.json.
DETAIL_KEYS = ("predictions", "outputs", "answers", "items")
WORST = 5
THIS_RUN = "**this run**"


@cache
def paper_reference() -> dict:
    """The paper's published tables (package data)."""
    return json.loads(resources.files("chimed_trl.evaluation").joinpath("paper_reference.json").read_text("utf-8"))


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


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _coverage_reasons(result: dict) -> list[str]:
    coverage = result.get("coverage") or {}
    reasons = []
    if coverage and coverage["scored"] < coverage["available"]:
        reasons.append(f"{coverage['scored']} of {coverage['available']} items (limit: {coverage['limit']})")
    if coverage.get("bundled_sample"):
        reasons.append("bundled sample, not the benchmark")
    return reasons


def _choice_reasons(result: dict, benchmark: str) -> list[str]:
    from chimed_trl.evaluation.choice import PRESETS

    wanted = {"CMMLU": ("cmmlu", "cmmlu_paper"), "C-Eval": ("ceval", "ceval_paper")}.get(benchmark)
    if wanted is None:  # MedQA: no official prompt to match
        return []
    fmt, preset = wanted
    reasons = []
    if result.get("prompt_format") != fmt:
        reasons.append(f"prompt format {result.get('prompt_format')!r}, not {benchmark}'s own ({fmt})")
    if set(result["per_subject"]) != set(PRESETS[preset]):
        reasons.append(f"subjects {sorted(result['per_subject'])} are not the paper's ({preset})")
    return reasons


def placement(summary: dict, task: str, benchmark: str | None) -> list[str]:
    """Why this task's figure may *not* sit in the paper's ``benchmark`` column ([] = it may)."""
    if not benchmark or task not in summary:
        return ["no paper benchmark set"]
    result = summary[task]
    reasons = _coverage_reasons(result)
    if task == "choice":
        reasons += _choice_reasons(result, benchmark)
    if task == "dialogue" and "ROUGE-1 (paper_compat)" not in result["scores"]:
        reasons.append("no paper_compat metrics (the paper's BLEU/ROUGE are the authors' computation)")
    return reasons


def comparison(summary: dict, benchmarks: dict) -> dict:
    """The paper's tables with this run's figures in the column it was set beside (``report.json["paper"]``).

    ``this_run`` holds only figures computed like the paper's; ``not_placed`` says, per benchmark, why a
    figure was kept out of its column."""
    ref = paper_reference()
    out: dict = {"source": ref["source"], "models": ref["models"], "this_run": {}, "not_placed": {}}
    out["choice_accuracy"] = ref["choice_accuracy"]
    out["ner_f1"] = ref["ner_f1"]
    out["open_qa_chimed"], out["dialogue_mc"] = ref["open_qa_chimed"], ref["dialogue_mc"]
    figures = {}
    if "choice" in summary:
        c = summary["choice"]
        figures["choice"] = {
            "micro": 100 * c["micro_accuracy"],
            "macro": 100 * c["macro_accuracy"],
            "denominator": c["total"],
        }
    if "ner" in summary:
        n = summary["ner"]
        figures["ner"] = {"f1": 100 * n["paper_compat"]["f1"], "clean_f1": 100 * n["mention_type"]["f1"]}
    if "dialogue" in summary:
        figures["dialogue"] = summary["dialogue"]["scores"]
    for task, figure in figures.items():
        benchmark = benchmarks.get(task)
        if not benchmark:
            continue
        reasons = placement(summary, task, benchmark)
        if reasons:
            out["not_placed"][benchmark] = {"reasons": reasons, **figure}
        else:
            out["this_run"][benchmark] = figure
    return out


def _not_placed_line(summary: dict, task: str, benchmark: str | None) -> list[str]:
    reasons = placement(summary, task, benchmark)
    if not benchmark or not reasons:
        return []
    return ["", f"**Not placed in the {benchmark} column** (not comparable with the paper): {'; '.join(reasons)}."]


def _choice_reference(summary: dict, benchmark: str | None) -> list[str]:
    ref = paper_reference()["choice_accuracy"]
    names = list(ref)
    rows = [[m] + [_fmt(ref[b]["scores"][m]) for b in names] for m in paper_reference()["models"]]
    c = summary["choice"]
    micro, macro = 100 * c["micro_accuracy"], 100 * c["macro_accuracy"]
    run = f"{micro:.2f} micro ({c['correct']}/{c['total']}), {macro:.2f} macro"
    placed = benchmark if not placement(summary, "choice", benchmark) else None
    if placed:
        rows.append([THIS_RUN] + [run if b == placed else "—" for b in names])
    lines = ["", "### Paper reference (accuracy %, as published)", ""] + _table(["model", *names], rows)
    lines += _not_placed_line(summary, "choice", benchmark)
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
    f1 = 100 * summary["ner"]["paper_compat"]["f1"]
    placed = benchmark if not placement(summary, "ner", benchmark) else None
    if placed:
        rows.append([f"{THIS_RUN} (paper_compat F1)"] + [f"{f1:.2f}" if b == placed else "—" for b in names])
    return (
        ["", "### Paper reference (entity F1 %, as published)", ""]
        + _table(["model", *names], rows)
        + _not_placed_line(summary, "ner", benchmark)
        + [
            "",
            f"Protocol: {ref['protocol']} This run's row is the paper_compat F1 (the authors' line counting) over "
            f"{summary['ner']['documents']} documents, {summary['ner']['k_shot']}-shot; the clean mention/type "
            "and offset-strict F1 above are not comparable with the paper's column.",
        ]
    )


def _dialogue_reference(summary: dict, benchmark: str | None) -> list[str]:
    lines: list[str] = []
    scores = summary["dialogue"]["scores"]
    for key, title in (("open_qa_chimed", "ChiMed open QA"), ("dialogue_mc", "MC multi-turn dialogue")):
        ref = paper_reference()[key]
        rows = [[m] + [_fmt(v) for v in ref["scores"][m]] for m in paper_reference()["models"]]
        if key == benchmark and not placement(summary, "dialogue", benchmark):
            compat = [scores[f"{m} (paper_compat)"] for m in ref["metrics"]]
            rows.append([f"{THIS_RUN} (paper_compat)"] + [_fmt(v) for v in compat])
        lines += ["", f"### Paper reference: {title} (%, as published)", ""] + _table(["model", *ref["metrics"]], rows)
        lines += ["", f"Protocol: {ref['protocol']}" + (f" {ref['notes']}" if ref.get("notes") else "")]
    lines += _not_placed_line(summary, "dialogue", benchmark)
    lines += [
        "",
        "Like for like: only the `(paper_compat)` figures are computed as the paper's were (the authors' NLTK BLEU "
        "and the `rouge` package's ROUGE on their space-wrapped strings); the clean character BLEU and ROUGE are "
        "different metrics and are never placed in the paper's columns. "
        + (
            f"This run was set beside the {benchmark} table."
            if benchmark
            else "Set `paper_dialogue_benchmark` to place this run in a table."
        ),
    ]
    return lines


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


def _cell(value, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


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
    table = []
    for item in rows:
        metric = item.get("metric") or {  # choice: what the letter scoring gave the gold, or how the answer was read
            key: value
            for key, value in (
                ("gold probability", (item.get("probabilities") or {}).get(item["gold"])),
                ("read as", item.get("extraction")),
            )
            if value is not None
        }
        table.append(
            [
                _cell(item["id"]),
                _cell(item.get("subject") or ""),
                _cell(item["gold"]),
                _cell(item["prediction"]),
                _cell(metric),
            ]
        )
    return lines + _table(["id", "subject", "gold", "prediction", "metric"], table)


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
        lines += _table(
            ["subject", "correct / total", "accuracy"],
            [[s, f"{v['correct']}/{v['total']}", f"{100 * v['accuracy']:.2f}"] for s, v in c["per_subject"].items()],
        )
        lines += _items_section("choice", worst)
        lines += _choice_reference(summary, benchmarks.get("choice"))
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
        lines += _table(
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
        lines += _ner_reference(summary, benchmarks.get("ner"))
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
        lines += _table(names, [[f"{d['scores'][k]:.2f}" for k in names], comparable])
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
    charts = _charts(summary, out)
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
