"""The evaluation stage: one model (local or behind an OpenAI-compatible API) through the paper's tasks.

    python -m chimed_trl.stages.evaluate --config recipes/tiny/evaluate.yaml      # = python recipes/evaluate.py ...

Pre-flight (adapter, API server) before the output directory is claimed; the directory follows
:mod:`chimed_trl.rundir` (foreign files refused, a different config refused naming the keys, ``overwrite_output_dir``
moves the old run to ``.previous/<time>/``). Tasks and metrics are :mod:`chimed_trl.evaluation.harness`'s; each task's
result is written to ``tasks/<task>.json`` and ``items/<task>.jsonl`` as soon as it finishes, so a rerun of the same
command continues with the rest. ``resolved_config.yaml`` is written first, ``report.md``/``report.json`` at the end
and ``metrics.json`` last (its presence means the evaluation finished; the pipeline skips the stage by it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import yaml
from transformers import set_seed

from chimed_trl.configs import ChimedModelConfig
from chimed_trl.errors import UserError
from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.evaluation.harness import check_task_data, run_task, write_items
from chimed_trl.reporting import evaluation as report
from chimed_trl.rundir import (
    PREVIOUS_DIR,
    Claim,
    RunLock,
    check_output_dir,
    move_run_aside,
    read_resolved_config,
    recipe_of,
    remove_if_only_ours,
)
from chimed_trl.runfiles import check_env_name, save_resolved_config, write_json

logger = logging.getLogger(__name__)

# Keys of the resolved config that do not change a task's result: a rerun may differ in them.
NOT_RESULT_KEYS = {"output_dir", "overwrite_output_dir", "tasks", "batch_size"}


def load_local(args: EvalArguments, model_args: ChimedModelConfig):
    """Model and tokenizer through :mod:`chimed_trl.modeling.load` (the loader training uses), plus an optional adapter."""
    import torch

    from chimed_trl.modeling.load import check_model_source, load_model, load_tokenizer
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


def _check_adapter(adapter_path: str) -> None:
    """A local adapter directory must hold adapter_config.json (else peft fails with a traceback after the load)."""
    from chimed_trl.modeling.load import check_model_source

    path = Path(adapter_path).expanduser()
    if path.is_dir() and not (path / "adapter_config.json").is_file():
        raise UserError(f"adapter_path: {path} has no adapter_config.json (is it a LoRA output directory?)")
    check_model_source(adapter_path, "adapter_path")  # a missing local path or a file: one line


def _prepare_output_dir(out: Path, resolved: dict, overwrite: bool) -> tuple[Claim, dict]:
    """Claim ``out`` (:mod:`chimed_trl.rundir`: a directory we did not write is refused whatever the flags say,
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
    from chimed_trl.runfiles import _as_dict, redact

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
        check_task_data(args, task)
    if pending and args.api_base_url:
        from chimed_trl.generation import OpenAIGenerator

        generate = OpenAIGenerator(args.api_base_url, args.api_model, args.api_key_env, args.max_new_tokens)
    elif pending:
        from chimed_trl.generation import TransformersGenerator

        model, tokenizer = load_local(args, model_args)
        generate = TransformersGenerator(model, tokenizer, args.max_new_tokens, args.batch_size)

    results: dict = {}
    for task in args.tasks:
        if task in finished:
            logger.info("%s: finished in an earlier run (%s), kept", task, out / "tasks" / f"{task}.json")
            results[task] = finished[task]
            continue
        results[task] = run_task(task, args, model, tokenizer, generate)
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


ARGUMENT_TYPES = (EvalArguments, ChimedModelConfig)  # what the YAML is parsed into


def main(eval_args, model_args) -> dict:
    return run_evaluation(eval_args, model_args)


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
