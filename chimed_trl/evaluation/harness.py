"""Run the paper's evaluations on one model and write ``report.json``, ``report.md`` and charts."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import set_seed

from chimed_trl.data.sources import load_records
from chimed_trl.evaluation import attitude_scales, choice, ner, report
from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.evaluation.text_metrics import text_scores
from chimed_trl.generation import OpenAIGenerator, TransformersGenerator

logger = logging.getLogger(__name__)


def _records(sources, limit: int | None = None) -> list[dict]:
    out = []
    for source in sources:
        out += load_records(source)[0]
    return out[:limit] if limit else out


def load_local(args: EvalArguments):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chimed_trl.templates import get_chat_template
    from chimed_trl.tiny import ensure_tiny

    if args.build_tiny_model:
        ensure_tiny(args.model_name_or_path, seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    if args.chat_template:
        tokenizer.chat_template = get_chat_template(args.chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path,
        dtype=getattr(torch, args.dtype),
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
        use_safetensors=True,
    )
    if args.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter_path)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer


def run_evaluation(args: EvalArguments) -> dict:
    start = time.time()
    set_seed(args.seed)
    model = tokenizer = None
    if args.api_base_url:
        generate = OpenAIGenerator(args.api_base_url, args.api_model, args.api_key_env, args.max_new_tokens)
    else:
        model, tokenizer = load_local(args)
        generate = TransformersGenerator(model, tokenizer, args.max_new_tokens, args.batch_size)
    results: dict = {}

    if "choice" in args.tasks and args.choice_datasets:
        records = choice.select(_records(args.choice_datasets), args.choice_subjects)[: args.limit or None]
        results["choice"] = choice.evaluate_choice(
            model,
            tokenizer,
            records,
            _records(args.choice_dev_datasets),
            args.choice_k_shot,
            args.batch_size,
            generate=generate if args.choice_mode == "generate" else None,
        )
    if "ner" in args.tasks and args.ner_datasets:
        records = _records(args.ner_datasets, args.limit)
        types = args.ner_types or sorted({e["type"] for r in records for e in r["entities"]})
        results["ner"] = ner.evaluate_ner(generate, records, _records(args.ner_train_datasets), types, args.ner_k_shot)
    if "dialogue" in args.tasks and args.dialogue_datasets:
        records = _records(args.dialogue_datasets, args.limit)
        outputs = generate([r["messages"] for r in records])
        scores = text_scores(outputs, [r["reference"] for r in records], paper_compat=args.paper_compat)
        results["dialogue"] = {
            "scores": scores,
            "records": len(records),
            "outputs": [{"id": r["id"], "output": o, "reference": r["reference"]} for r, o in zip(records, outputs)],
        }
    if "scales" in args.tasks and args.scale_datasets:
        items = _records(args.scale_datasets)
        choose = _scale_chooser(model, tokenizer, generate, args)
        results["scales"] = {
            scale: attitude_scales.evaluate_scale(choose, items, scale)
            for scale in ("CAMI", "MICA")
            if any(i["scale"] == scale for i in items)
        }
    settings = {
        "model": args.model_name_or_path or args.api_model,
        "adapter": args.adapter_path,
        "api_base_url": args.api_base_url,
        "tasks": args.tasks,
        "choice_k_shot": args.choice_k_shot,
        "choice_mode": args.choice_mode,
        "choice_subjects": args.choice_subjects,
        "ner_k_shot": args.ner_k_shot,
        "paper_compat": args.paper_compat,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "limit": args.limit,
        "wall_time_s": round(time.time() - start, 2),
    }
    report.write_report(results, settings, Path(args.output_dir))
    return {"settings": settings, "tasks": results}


def _scale_chooser(model, tokenizer, generate, args: EvalArguments):
    if model is not None:
        return lambda prompts, letters: [
            letter for letter, _ in choice.predict_letters(model, tokenizer, prompts, letters, args.batch_size)
        ]
    return lambda prompts, letters: [
        choice.extract_choice(text, opts) for text, opts in zip(generate(prompts), letters)
    ]
