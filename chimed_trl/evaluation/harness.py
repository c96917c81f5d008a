"""The paper's evaluation tasks on one model: multiple choice, NER, open QA/dialogue, CAMI/MICA.

:func:`run_task` runs one task with a generator (local or API) and returns its result, with one item per
question (id, subject, the exact prompt sent, gold, prediction, scores or raw output, correct or per-item metric)
for ``items/<task>.jsonl`` (:func:`write_items`, atomic). Every task records its ``coverage``: items scored of items
available (``limit``) and whether the data is a bundled sample; the report never places a limited or stand-in
figure in a paper column. The stage around the tasks (loading, output directory, resume, reports) is
:mod:`chimed_trl.stages.evaluate`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from chimed_trl.data.sources import load_records
from chimed_trl.errors import UserError
from chimed_trl.evaluation import attitude_scales, choice, ner
from chimed_trl.evaluation.config import TASK_DATASETS, EvalArguments
from chimed_trl.evaluation.text_metrics import pair_rouge_l, paper_compat_empty_pairs, text_scores
from chimed_trl.runfiles import write_atomic

logger = logging.getLogger(__name__)


def _records(sources, limit: int | None = None, check_ids: bool = False) -> list[dict]:
    """The records of some sources, in order; with ``check_ids``, a repeated ``id`` is an error naming both places."""
    out, seen = [], {}
    for source in sources:
        records = load_records(source)[0]
        if not records:
            raise UserError(f"{source.path or source.hub_id or source.label}: no records")
        for line, record in enumerate(records, start=1):
            if check_ids and "id" in record:
                where = f"{source.path or source.label} record {line}"
                if record["id"] in seen:
                    raise UserError(
                        f"{where}: field id: duplicate id {record['id']!r} (first at {seen[record['id']]})"
                    )
                seen[record["id"]] = where
        out += records
    return out[:limit] if limit else out


def _bundled(sources) -> bool:
    """Whether any source is one of the package's bundled sample files (stand-ins, not a benchmark)."""
    from chimed_trl.data import samples

    home = Path(samples.__file__).resolve().parent
    return any(s.path and Path(s.path).expanduser().resolve().is_relative_to(home) for s in sources)


def _limited(records: list[dict], limit: int | None, sources) -> tuple[list[dict], dict]:
    """The first ``limit`` records (0 or None: all) and the coverage the report states beside the figures."""
    kept = records[: limit or None]
    coverage = {
        "scored": len(kept),
        "available": len(records),
        "limit": limit or None,
        "bundled_sample": _bundled(sources),
    }
    return kept, coverage


def write_items(out: Path, task: str, items: Sequence[dict]) -> Path:
    """``items/<task>.jsonl``, one JSON line per item, written atomically (temp file + rename)."""
    text = "".join(json.dumps(item, ensure_ascii=False, default=str) + "\n" for item in items)
    return write_atomic(out / "items" / f"{task}.jsonl", text)


def _where(sources) -> str:
    return ", ".join(str(s.path or s.hub_id or s.label) for s in sources)


def with_progress(generate: Callable, prompts: Sequence, desc: str, chunk: int) -> list[str]:
    """``generate`` over ``prompts`` in chunks, with a progress bar; an API failure says how far it got."""
    outputs: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=len(prompts) <= chunk) as bar:
        for start in range(0, len(prompts), chunk):
            try:
                outputs += generate(list(prompts[start : start + chunk]))
            except Exception as e:
                if not type(e).__module__.startswith(("openai", "httpx")):
                    raise
                raise UserError(
                    f"{desc}: the API failed after {len(outputs)} of {len(prompts)} prompts ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); finished tasks are kept, rerun to continue"
                ) from None
            bar.update(min(chunk, len(prompts) - start))
    return outputs


def _run_choice(args, model, tokenizer, generate) -> dict:
    records = choice.select(_records(args.choice_datasets, check_ids=True), args.choice_subjects)
    if not records:
        raise UserError(f"choice_datasets ({_where(args.choice_datasets)}): no question of {args.choice_subjects}")
    records, coverage = _limited(records, args.limit, args.choice_datasets)
    dev = _records(args.choice_dev_datasets)
    if args.choice_k_shot and not dev:
        logger.warning("choice_k_shot=%d but no choice_dev_datasets: running 0-shot", args.choice_k_shot)
    fmt = choice.resolve_format(args.choice_format, records, [s.card for s in args.choice_datasets])
    use_generation = args.choice_mode == "generate"
    result = choice.evaluate_choice(
        model,
        tokenizer,
        records,
        dev,
        args.choice_k_shot,
        args.batch_size,
        generate=(lambda p: with_progress(generate, p, "choice", args.batch_size)) if use_generation else None,
        prompt_format=fmt,
        max_length=args.choice_max_length,
        seed=args.seed,
    )
    result["coverage"] = coverage
    if result["shots_used"]["min"] < args.choice_k_shot:
        logger.warning(
            "choice: %d-shot asked, %s used (dev questions per subject)", args.choice_k_shot, result["shots_used"]
        )
    return result


def _run_ner(args, generate) -> dict:
    records, coverage = _limited(_records(args.ner_datasets, check_ids=True), args.limit, args.ner_datasets)
    train = _records(args.ner_train_datasets)
    types = args.ner_types or sorted({e["type"] for r in records for e in r["entities"]})
    if args.ner_k_shot > len(train):
        logger.warning("ner: %d-shot asked, %d exemplars available: using %d", args.ner_k_shot, len(train), len(train))
    gen = lambda p: with_progress(generate, p, "ner", args.batch_size)  # noqa: E731
    result = ner.evaluate_ner(gen, records, train, types, min(args.ner_k_shot, len(train)))
    result["k_shot_asked"] = args.ner_k_shot
    result["coverage"] = coverage
    return result


def _run_dialogue(args, generate) -> dict:
    records, coverage = _limited(_records(args.dialogue_datasets, check_ids=True), args.limit, args.dialogue_datasets)
    outputs = with_progress(generate, [r["messages"] for r in records], "dialogue", args.batch_size)
    references = [r["reference"] for r in records]
    result = {
        "scores": text_scores(outputs, references, paper_compat=args.paper_compat),
        "records": len(records),
        "coverage": coverage,
        "items": [_dialogue_item(r, o) for r, o in zip(records, outputs)],
    }
    if args.paper_compat:
        result["paper_compat_empty_pairs"] = paper_compat_empty_pairs(outputs, references)
    return result


def _dialogue_item(record: dict, output: str) -> dict:
    """The messages sent are the prompt (the chat template applies them); the metric is the pair's ROUGE-L."""
    return {
        "id": record["id"],
        "subject": None,
        "prompt": record["messages"],
        "gold": record["reference"],
        "prediction": output,
        "metric": {"ROUGE-L": pair_rouge_l(output, record["reference"])},
    }


def _run_scales(args, model, tokenizer, generate) -> dict:
    items = _records(args.scale_datasets)
    choose = _scale_chooser(model, tokenizer, generate, args)
    where = _where(args.scale_datasets)
    return {
        scale: attitude_scales.evaluate_scale(choose, items, scale, where=where)
        for scale in ("CAMI", "MICA")
        if any(i["scale"] == scale for i in items)
    }


def _scale_chooser(model, tokenizer, generate, args: EvalArguments):
    if model is not None:
        return lambda prompts, letters: [
            letter for letter, _ in choice.predict_letters(model, tokenizer, prompts, letters, args.batch_size)
        ]
    return lambda prompts, letters: [
        choice.extract_choice(text, opts)
        for text, opts in zip(with_progress(generate, prompts, "scales", args.batch_size), letters)
    ]


def check_task_data(args: EvalArguments, task: str) -> None:
    """Read a task's data (every id checked) before minutes of model loading; a bad row is one line."""
    _records(getattr(args, TASK_DATASETS[task]), check_ids=task != "scales")


def run_task(task: str, args: EvalArguments, model, tokenizer, generate) -> dict:
    """One task's result (``model``/``tokenizer`` are None for an API model: scored through ``generate``)."""
    runners = {
        "choice": lambda: _run_choice(args, model, tokenizer, generate),
        "ner": lambda: _run_ner(args, generate),
        "dialogue": lambda: _run_dialogue(args, generate),
        "scales": lambda: _run_scales(args, model, tokenizer, generate),
    }
    return runners[task]()


# deprecated path (the driver lived here), kept for compatibility; lazy: chimed_trl.stages.evaluate imports this
def __getattr__(name: str):
    if name in ("run_evaluation", "load_local", "NOT_RESULT_KEYS"):
        import chimed_trl.stages.evaluate as stage

        return getattr(stage, name)
    raise AttributeError(f"module 'chimed_trl.evaluation.harness' has no attribute {name!r}")
