"""Run the paper's evaluations on one model and write ``report.json``, ``report.md`` and charts.

Each task's result is written to ``output_dir/tasks/<task>.json`` as soon as it finishes, with one
line per item (id, subject, the exact prompt sent, gold, prediction, scores or raw output, correct or
per-item metric) in ``output_dir/items/<task>.jsonl``, both atomically, so an interrupted run (an API
server that goes away) keeps the finished tasks, and a rerun of the same command continues with the
rest. Every task records its ``coverage``: items scored of items available (``limit``) and whether the
data is a bundled sample; the report never places a limited or stand-in figure in a paper column. ``resolved_config.yaml`` is written first, ``metrics.json`` last
(its presence means the evaluation finished; the pipeline skips the stage by it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from tqdm.auto import tqdm
from transformers import set_seed

from chimed_trl.configs import ChimedModelConfig
from chimed_trl.data.sources import load_records
from chimed_trl.errors import UserError
from chimed_trl.evaluation import attitude_scales, choice, ner, report
from chimed_trl.evaluation.config import TASK_DATASETS, EvalArguments
from chimed_trl.evaluation.text_metrics import pair_rouge_l, paper_compat_empty_pairs, text_scores
from chimed_trl.runs import (
    PREVIOUS_DIR,
    Claim,
    RunLock,
    check_env_name,
    check_output_dir,
    move_run_aside,
    read_resolved_config,
    recipe_of,
    remove_if_only_ours,
    save_resolved_config,
    write_atomic,
    write_json,
)

logger = logging.getLogger(__name__)

# Keys of the resolved config that do not change a task's result: a rerun may differ in them.
NOT_RESULT_KEYS = {"output_dir", "overwrite_output_dir", "tasks", "batch_size"}


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


def load_local(args: EvalArguments, model_args: ChimedModelConfig):
    """Model and tokenizer through :mod:`chimed_trl.models` (the loader training uses), plus an optional adapter."""
    import torch

    from chimed_trl.models import check_model_source, load_model, load_tokenizer
    from chimed_trl.tiny import ensure_tiny

    if args.build_tiny_model:
        ensure_tiny(model_args.model_name_or_path)  # any tiny build (the eval seed need not be the build seed)
    trust = args.trust_remote_code
    tokenizer = load_tokenizer(model_args, args.chat_template, trust_remote_code=trust)
    model = load_model(model_args, task="causal_lm", trust_remote_code=trust)
    if args.adapter_path:
        from peft import PeftModel

        check_model_source(args.adapter_path, "adapter_path")
        model = PeftModel.from_pretrained(model, args.adapter_path)
    if torch.cuda.is_available() and getattr(model, "hf_device_map", None) is None:
        model = model.to("cuda")
    return model.eval(), tokenizer


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


def _check_adapter(adapter_path: str) -> None:
    """A local adapter directory must hold adapter_config.json (else peft fails with a traceback after the load)."""
    from chimed_trl.models import check_model_source

    path = Path(adapter_path).expanduser()
    if path.is_dir() and not (path / "adapter_config.json").is_file():
        raise UserError(f"adapter_path: {path} has no adapter_config.json (is it a LoRA output directory?)")
    check_model_source(adapter_path, "adapter_path")  # a missing local path or a file: one line


def _prepare_output_dir(out: Path, resolved: dict, overwrite: bool) -> tuple[Claim, dict]:
    """Claim ``out`` (:mod:`chimed_trl.runs`: a directory we did not write is refused whatever the flags say,
    the lock is taken) and return the finished tasks of an earlier run of the same config (to skip)."""
    claim = check_output_dir(out)
    saved = read_resolved_config(out)
    # a training run (or anything else) also saves a resolved_config.yaml: only one with the evaluation's own section
    # is ours, and --overwrite_output_dir never licenses writing over someone else's run
    if saved is not None and not isinstance(saved.get("eval"), dict):
        raise UserError(
            f"output_dir: {out} holds a {recipe_of(saved)!r} run, not an evaluation; choose a new directory"
        )
    claim.lock = RunLock(out).acquire()
    if saved is None:
        return claim, {}
    if overwrite:
        claim.moved_to = move_run_aside(out)
        logger.warning("overwrite_output_dir: the previous evaluation in %s moved to %s", out, claim.moved_to)
        return claim, {}
    differing = sorted(
        f"{section}.{key}"
        for section in ("eval", "model")
        for key in set(saved.get(section, {})) | set(resolved.get(section, {}))
        if key not in NOT_RESULT_KEYS and saved.get(section, {}).get(key) != resolved.get(section, {}).get(key)
    )
    if differing:
        claim.lock.release()
        raise UserError(
            f"output_dir: {out} holds an evaluation with a different config ({', '.join(differing)}); rerun with "
            f"its settings, use --overwrite_output_dir true (the old run moves to {PREVIOUS_DIR}/<time>/), or use a "
            "new output_dir"
        )
    finished = {}
    for path in sorted((out / "tasks").glob("*.json")):
        finished[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return claim, finished


def _resolved(args: EvalArguments, model_args: ChimedModelConfig) -> dict:
    """The sections ``save_resolved_config`` writes, as they read back from the YAML (to compare with a saved run)."""
    from chimed_trl.runs import _as_dict, redact

    sections = {"eval": args, "model": model_args}
    payload = {name: redact(json.loads(json.dumps(_as_dict(obj), default=str))) for name, obj in sections.items()}
    return yaml.safe_load(yaml.safe_dump(payload, allow_unicode=True))


def run_evaluation(args: EvalArguments, model_args: ChimedModelConfig | None = None) -> dict:
    """Every requested task; returns ``{"settings", "tasks"}`` and writes the reports into ``args.output_dir``."""
    start = time.time()
    model_args = model_args or ChimedModelConfig()
    if not model_args.model_name_or_path and not args.api_base_url:
        raise UserError("model_name_or_path: give a local model (or hub id), or api_base_url + api_model")
    if args.adapter_path and not args.api_base_url:
        _check_adapter(args.adapter_path)
    if args.api_base_url:  # pre-flight, before the output dir is claimed or anything loads
        from chimed_trl.generation.openai_backend import check_server

        check_env_name(args.api_key_env, "api_key_env")
        check_server(args.api_base_url, args.api_model, api_key=os.environ.get(args.api_key_env))  # servers without
    else:  # auth (vLLM, transformers serve) need no key
        check_env_name(args.api_key_env, "api_key_env")
    out = Path(args.output_dir).expanduser()
    claim, finished = _prepare_output_dir(out, _resolved(args, model_args), args.overwrite_output_dir)
    try:
        return _evaluate(args, model_args, out, finished, start)
    except UserError:
        claim.lock.release()
        remove_if_only_ours(claim)  # refused before any task finished: nothing left behind
        raise
    finally:
        claim.lock.release()


def _evaluate(args: EvalArguments, model_args: ChimedModelConfig, out: Path, finished: dict, start: float) -> dict:
    if (out / "metrics.json").exists() and set(args.tasks) <= set(finished):
        logger.info("evaluation already finished in %s (metrics.json); --overwrite_output_dir true reruns it", out)
        print(f"already finished: {out / 'report.md'}")
        return json.loads((out / "report.json").read_text(encoding="utf-8"))
    save_resolved_config(out, eval=args, model=model_args)
    set_seed(args.seed)

    model = tokenizer = generate = None
    pending = [t for t in args.tasks if t not in finished]
    for task in pending:  # data errors first, before minutes of model loading
        _records(getattr(args, TASK_DATASETS[task]), check_ids=task != "scales")
    if pending and args.api_base_url:
        from chimed_trl.generation import OpenAIGenerator

        generate = OpenAIGenerator(args.api_base_url, args.api_model, args.api_key_env, args.max_new_tokens)
    elif pending:
        from chimed_trl.generation import TransformersGenerator

        model, tokenizer = load_local(args, model_args)
        generate = TransformersGenerator(model, tokenizer, args.max_new_tokens, args.batch_size)

    runners = {
        "choice": lambda: _run_choice(args, model, tokenizer, generate),
        "ner": lambda: _run_ner(args, generate),
        "dialogue": lambda: _run_dialogue(args, generate),
        "scales": lambda: _run_scales(args, model, tokenizer, generate),
    }
    results: dict = {}
    for task in args.tasks:
        if task in finished:
            logger.info("%s: finished in an earlier run (%s), kept", task, out / "tasks" / f"{task}.json")
            results[task] = finished[task]
            continue
        results[task] = runners[task]()
        write_items(out, task, report.task_items(task, results[task]))
        write_json(out / "tasks" / f"{task}.json", results[task])  # kept if a later task fails

    settings = {
        "model": model_args.model_name_or_path or args.api_model,
        "adapter": args.adapter_path,
        "api_base_url": args.api_base_url,
        "api_model": args.api_model,
        "tasks": args.tasks,
        "choice_k_shot_asked": args.choice_k_shot,
        "choice_mode": args.choice_mode,
        "choice_format": results.get("choice", {}).get("prompt_format"),
        "choice_subjects": args.choice_subjects,
        "ner_k_shot_asked": args.ner_k_shot,
        "paper_compat": args.paper_compat,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "limit": args.limit,
        "wall_time_s": round(time.time() - start, 2),
    }
    benchmarks = {
        "choice": args.paper_choice_benchmark,
        "ner": args.paper_ner_benchmark,
        "dialogue": args.paper_dialogue_benchmark,
    }
    payload = report.write_report(results, settings, out, benchmarks)
    write_json(out / "metrics.json", report.headline_metrics(payload["tasks"], settings))  # last: the run finished
    print(f"report: {out / 'report.md'}")
    return {"settings": settings, "tasks": results}
