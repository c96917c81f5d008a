"""Check 2: QLoRA SFT of a random-init Llama-2-13B-shaped model at 4,096 tokens, batch 1, gradient checkpointing.

It takes the path a user takes: ``recipes/qlora/sft.yaml`` parsed by the recipe's own parser, the model
loaded by ``chimed_trl.modeling.load.load_model`` (NF4 4-bit, double quantisation, from a saved checkpoint),
LoRA from ``trl.get_peft_config``, trained by ``ChimedSFTTrainer``. Figures: peak GPU memory (allocated
and reserved by PyTorch, plus the CUDA context), step time, trainable parameters; the verdict on the
recipe's "one 24 GB GPU" promise. The data are random 4,096-token rows (``assistant_only_loss`` off:
the logits, hence the memory, are the same for every token either way).
"""

from __future__ import annotations

import torch

from benchmarks.gpu.common import (
    GIB,
    REPO,
    Context,
    StepTimer,
    importable,
    overall,
    peak_memory,
    reset_memory,
    result,
    skipped,
)
from benchmarks.gpu.shapes import LLAMA2_13B, build_model, model_config, tiny

RECIPE = REPO / "recipes" / "qlora" / "sft.yaml"
CARD_GIB = 24.0  # the recipe's promise: one 24 GB card (RTX 3090/4090, A10/L4 class: 24 GiB)


def recipe_args(ctx: Context, model_dir, output_dir, steps: int, quantize: bool):
    """The recipe YAML through the recipe's own parser, with only run-length and data overrides.

    The CPU dry run also turns bf16 off, and ``quantize=False`` turns 4-bit off (no bitsandbytes on CPU).
    """
    from trl import SFTConfig, TrlParser

    from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments

    overrides = {
        "model_name_or_path": model_dir,
        "output_dir": output_dir,
        "max_steps": steps,
        "gradient_accumulation_steps": 1,  # a timed step = one 4,096-token micro-batch (the recipe accumulates 16)
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "assistant_only_loss": "false",
        "dataset_num_proc": 1,
    }
    if ctx.dry_run:
        overrides.update(bf16="false", use_cpu="true", dtype="float32", max_length=256)
    if not quantize:
        overrides.update(load_in_4bit="false")
    argv = ["--config", str(RECIPE)] + [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    return parser.parse_args_and_config(argv)


def save_random_model(ctx: Context, path) -> None:
    """A random-init checkpoint of the shape, saved like a hub download (safetensors shards + tokenizer)."""
    shape = tiny(LLAMA2_13B) if ctx.dry_run else LLAMA2_13B
    model = build_model(model_config(shape, ctx.tokenizer()), ctx.device, torch.bfloat16)
    model.save_pretrained(path, max_shard_size="5GB")
    ctx.tokenizer().save_pretrained(path)
    del model
    reset_memory()


def random_rows(n: int, length: int, vocab: int):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    return Dataset.from_dict({"input_ids": torch.randint(16, vocab, (n, length), generator=g).tolist()})


def quantization_summary(model_args) -> dict:
    from trl import get_quantization_config

    q = get_quantization_config(model_args)
    return {
        "load_in_4bit": bool(q and q.load_in_4bit),
        "quant_type": q.bnb_4bit_quant_type if q else None,
        "double_quant": q.bnb_4bit_use_double_quant if q else None,
        "compute_dtype": str(q.bnb_4bit_compute_dtype).removeprefix("torch.") if q else None,
    }


def run(ctx: Context) -> dict:
    from trl import get_peft_config

    from chimed_trl.modeling.load import load_model
    from chimed_trl.trainers import ChimedSFTTrainer

    steps = 1 if ctx.dry_run else 4
    model_dir = ctx.subdir("llama2-13b-random")
    output_dir = str(ctx.subdir("qlora-out"))
    quant = quantization_summary(recipe_args(ctx, model_dir, output_dir, steps, quantize=True)[2])
    save_random_model(ctx, model_dir)
    # the dry run trains plain LoRA on the tiny twin, everything else as the recipe says
    _, training_args, model_args = recipe_args(ctx, model_dir, output_dir, steps, quantize=not ctx.dry_run)
    parts = {}
    if ctx.dry_run:
        parts["4bit"] = skipped("bitsandbytes 4-bit needs CUDA: the dry run trains plain LoRA on the tiny twin")
    elif not importable("bitsandbytes"):
        return result("qlora_memory", ctx, "failed", reason="bitsandbytes is not importable: carry it (wheels.sh)")
    model = load_model(model_args)
    weights_gib = torch.cuda.memory_allocated() / GIB if not ctx.dry_run else None
    reset_memory()
    timer = StepTimer()
    trainer = ChimedSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=random_rows(steps + 1, training_args.max_length, model.config.vocab_size),
        processing_class=ctx.tokenizer(),
        peft_config=get_peft_config(model_args),
        callbacks=[timer],
    )
    trainer.train()
    memory = peak_memory(ctx)
    figures = {
        "step_s": round(timer.steady(1), 3),
        "step_times_s": [round(t, 3) for t in timer.times],
        **memory,
        "weights_gib": round(weights_gib, 3) if weights_gib is not None else None,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "loss_last": timer.losses[-1] if timer.losses else None,
        "tokens_per_step": training_args.max_length * training_args.per_device_train_batch_size,
    }
    if not ctx.dry_run:
        free, total = torch.cuda.mem_get_info()
        context = (total - free - torch.cuda.memory_reserved()) / GIB  # CUDA context + library workspaces
        need = memory["peak_reserved_gib"] + context
        figures.update(cuda_context_gib=round(context, 3), needs_gib=round(need, 2), fits_24gb=need <= CARD_GIB)
    parts["train"] = {
        "status": "passed" if timer.losses_finite() and len(timer.times) == steps else "failed",
        "reason": None if timer.losses_finite() else f"losses {timer.losses}",
    }
    config = {
        "recipe": str(RECIPE.relative_to(REPO)),
        "shape": "llama2-13b" + (" (tiny twin)" if ctx.dry_run else ""),
        "max_length": training_args.max_length,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_checkpointing": training_args.gradient_checkpointing,
        "lora_r": model_args.lora_r,
        "lora_target_modules": model_args.lora_target_modules,
        "recipe_quantization": quant,
    }
    del trainer, model
    return result("qlora_memory", ctx, overall(parts), {**figures, "parts": parts}, config=config)
