"""The paper's published tables, laid out with this run's rows, and when a run's figure may sit in their columns.

The reference rows are the published ChiMed-GPT figures shipped in ``chimed_trl/evaluation/paper_reference.json``
(source: arXiv 2311.06025 / the authors' README, synlp/ChiMed-GPT), laid out as the paper's tables by
:func:`reference_table` (the one helper every report uses), with each benchmark's denominator and the places
where a comparison is not like for like.

A run's figure is placed in a paper column only when it was computed like the paper's (:func:`placement`): all
items (no ``limit``), the benchmark's data (not a bundled sample), the benchmark's own prompt and subject set,
and the authors' metric (``paper_compat``). Otherwise the report says why beside the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from chimed_trl.reporting.markdown import table

THIS_RUN = "**this run**"
PAPER_MODEL = "ChiMed-GPT"  # the paper's model, set beside a run's figure


@cache
def paper_reference() -> dict:
    """The paper's published tables (package data)."""
    return json.loads(resources.files("chimed_trl.evaluation").joinpath("paper_reference.json").read_text("utf-8"))


def reference_table(columns: list[str], published: Callable[[str, str], Any], extra_rows=()) -> list[str]:
    """The paper's rows (one per published model, ``published(model, column)`` in each cell), then ``extra_rows``."""
    rows = [[model, *(published(model, c) for c in columns)] for model in paper_reference()["models"]]
    return table(["model", *columns], rows + list(extra_rows))


def published_scores(ref_table: dict) -> Callable[[str, str], Any]:
    """A table whose ``scores[model]`` is a list in ``metrics`` order, read by (model, metric)."""
    return lambda model, metric: ref_table["scores"][model][ref_table["metrics"].index(metric)]


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


def choice_reference(summary: dict, benchmark: str | None) -> list[str]:
    ref = paper_reference()["choice_accuracy"]
    names = list(ref)
    rows = []
    c = summary["choice"]
    micro, macro = 100 * c["micro_accuracy"], 100 * c["macro_accuracy"]
    run = f"{micro:.2f} micro ({c['correct']}/{c['total']}), {macro:.2f} macro"
    placed = benchmark if not placement(summary, "choice", benchmark) else None
    if placed:
        rows.append([THIS_RUN] + [run if b == placed else "—" for b in names])
    published = reference_table(names, lambda m, b: ref[b]["scores"][m], rows)
    lines = ["", "### Paper reference (accuracy %, as published)", ""] + published
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


def ner_reference(summary: dict, benchmark: str | None) -> list[str]:
    ref = paper_reference()["ner_f1"]
    names = [k for k in ref if k != "protocol"]
    rows = []
    f1 = 100 * summary["ner"]["paper_compat"]["f1"]
    placed = benchmark if not placement(summary, "ner", benchmark) else None
    if placed:
        rows.append([f"{THIS_RUN} (paper_compat F1)"] + [f"{f1:.2f}" if b == placed else "—" for b in names])
    return (
        ["", "### Paper reference (entity F1 %, as published)", ""]
        + reference_table(names, lambda m, b: ref[b][m], rows)
        + _not_placed_line(summary, "ner", benchmark)
        + [
            "",
            f"Protocol: {ref['protocol']} This run's row is the paper_compat F1 (the authors' line counting) over "
            f"{summary['ner']['documents']} documents, {summary['ner']['k_shot']}-shot; the clean mention/type "
            "and offset-strict F1 above are not comparable with the paper's column.",
        ]
    )


def dialogue_reference(summary: dict, benchmark: str | None) -> list[str]:
    lines: list[str] = []
    scores = summary["dialogue"]["scores"]
    for key, title in (("open_qa_chimed", "ChiMed open QA"), ("dialogue_mc", "MC multi-turn dialogue")):
        ref = paper_reference()[key]
        rows = []
        if key == benchmark and not placement(summary, "dialogue", benchmark):
            compat = [scores[f"{m} (paper_compat)"] for m in ref["metrics"]]
            rows.append([f"{THIS_RUN} (paper_compat)", *compat])
        lines += ["", f"### Paper reference: {title} (%, as published)", ""]
        lines += reference_table(ref["metrics"], published_scores(ref), rows)
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


def published_figure(reference: dict, name: str, model: str = PAPER_MODEL) -> float | None:
    """``model``'s published figure for ``"<benchmark> <metric>"`` in the paper's tables (``reference``), if any."""
    benchmark, _, metric = name.partition(" ")
    choice = (reference.get("choice_accuracy") or {}).get(benchmark)
    if choice and metric == "micro":
        return choice["scores"].get(model)
    ner = (reference.get("ner_f1") or {}).get(benchmark)
    if ner and metric == "f1":
        return ner.get(model)
    text = reference.get(benchmark)
    if isinstance(text, dict) and metric in text.get("metrics", []):
        return text["scores"][model][text["metrics"].index(metric)]
    return None
