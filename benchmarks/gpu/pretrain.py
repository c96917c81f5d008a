"""Check 1: continued pre-training throughput at 4,096 tokens, BFD-packed, padding-free, on the package's trainer.

A random-init Qwen2-1.5B-shaped model in bf16 trains through ``ChimedSFTTrainer`` (``packing_strategy:
bfd_split``, padding-free batches) once per attention backend that is installed. Figures: tokens/s,
MFU = 6 x params x tokens/s / peak dense bf16 (the assumed datasheet peak, and a measured matmul rate
beside it), peak memory. Then the first packed batch of the trainer's own dataloader is run through
the model and each of its documents alone: their logits must agree within a bf16 tolerance.
"""

from __future__ import annotations

import torch

from benchmarks.gpu.common import (
    CANNOT_TRAVEL,
    Context,
    StepTimer,
    assumed_peak_bf16,
    device_facts,
    importable,
    matmul_rate,
    overall,
    peak_memory,
    random_documents,
    reset_memory,
    result,
    skipped,
)
from benchmarks.gpu.shapes import QWEN2_1_5B, build_model, count_params, model_config, tiny

BACKENDS = {"sdpa": None, "flash_attention_2": "flash_attn"}  # backend -> module it needs


def settings(ctx: Context) -> dict:
    if ctx.dry_run:
        return dict(shape=tiny(QWEN2_1_5B), max_length=256, batch=2, warmup=0, steps=1)
    # batch 2 as recipes/chimed-gpt/pretrain.yaml; padding-free flattens the batch into one sequence
    return dict(shape=QWEN2_1_5B, max_length=4096, batch=2, warmup=3, steps=13)


def make_trainer(ctx: Context, model, dataset, cfg: dict, name: str):
    from trl import SFTConfig

    from chimed_trl.trainers import ChimedSFTTrainer

    args = SFTConfig(
        output_dir=str(ctx.subdir(name)),
        max_length=cfg["max_length"],
        packing=True,
        packing_strategy="bfd_split",
        padding_free=True,
        per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        max_steps=cfg["steps"],
        learning_rate=1e-5,
        **ctx.trainer_flags(),
    )
    timer = StepTimer()
    trainer = ChimedSFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=ctx.tokenizer(), callbacks=[timer]
    )
    return trainer, timer


def train_backend(ctx: Context, backend: str, dataset, cfg: dict, peak: float | None, matmul: float) -> dict:
    reset_memory()
    model = build_model(model_config(cfg["shape"], ctx.tokenizer(), backend), ctx.device, ctx.dtype)
    params = count_params(model)
    trainer, timer = make_trainer(ctx, model, dataset, cfg, f"pretrain-{backend}")
    trainer.train()
    seconds = timer.steady(cfg["warmup"])
    tokens_per_s = timer.tokens_per_s(cfg["warmup"])
    flops = 6 * params * tokens_per_s
    part = {
        "status": "passed" if timer.losses_finite() and len(timer.times) == cfg["steps"] else "failed",
        "params": params,
        "steps_timed": len(timer.times[cfg["warmup"] :]) or len(timer.times),
        "packing_efficiency": trainer.packing_stats["efficiency"],
        "tokens_trained": timer.tokens[-1] if timer.tokens else None,
        "step_s_median": seconds,  # unrounded, like every figure another is derived from; the report rounds
        "tokens_per_s": tokens_per_s,
        "model_tflops": round(flops / 1e12, 2),
        "mfu": round(flops / peak, 4) if peak else None,
        "fraction_of_measured_matmul": round(flops / matmul, 4),
        "loss_last": timer.losses[-1] if timer.losses else None,
        **peak_memory(ctx),
    }
    if part["status"] == "failed":
        part["reason"] = f"losses {timer.losses} over {len(timer.times)} of {cfg['steps']} steps"
    if backend == "sdpa":
        part["packed_vs_alone"] = packed_vs_alone(ctx, model, trainer)
    del trainer, model
    return part


def document_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each document in a padding-free row: positions restart at 0 where one begins."""
    starts = (position_ids == 0).nonzero().flatten().tolist()
    ends = starts[1:] + [position_ids.numel()]
    return list(zip(starts, ends, strict=True))


@torch.no_grad()
def packed_vs_alone(ctx: Context, model, trainer) -> dict:
    """Logits of the trainer's first packed batch (use_cache=False, as the trainer runs) vs each document alone.

    Tolerance: fp32 on the CPU dry run 1e-4; bf16 on the GPU max(0.05, 2% of the largest logit).
    The cache-on forward (which leaks across documents on sdpa) is reported beside it, for scale.
    """
    model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    ids, pos = batch["input_ids"].to(model.device), batch["position_ids"].to(model.device)
    packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
    leaky = model(input_ids=ids, position_ids=pos, use_cache=True).logits[0]
    spans = document_spans(pos[0].cpu())
    worst, worst_leak, scale = 0.0, 0.0, 0.0
    for start, end in spans:
        alone = model(input_ids=ids[:, start:end], use_cache=False).logits[0].float()
        worst = max(worst, (packed[start:end].float() - alone).abs().max().item())
        worst_leak = max(worst_leak, (leaky[start:end].float() - alone).abs().max().item())
        scale = max(scale, alone.abs().max().item())
    tolerance = 1e-4 if ctx.dry_run else max(0.05, 0.02 * scale)
    model.train()
    return {
        "status": "passed" if worst <= tolerance else "failed",
        "reason": None if worst <= tolerance else f"packed logits differ from alone by {worst:.3g} > {tolerance:.3g}",
        "documents": len(spans),
        "tokens": int(ids.numel()),
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "max_abs_logit": scale,
        "cache_on_max_abs_diff": worst_leak,
    }


def run(ctx: Context) -> dict:
    cfg = settings(ctx)
    name = device_facts()["device"]
    peak = None if ctx.dry_run else assumed_peak_bf16(name)
    matmul = matmul_rate(ctx.dry_run)
    rows = cfg["batch"] * (cfg["steps"] + 1)
    dataset = random_documents(int(rows * cfg["max_length"] * 1.05), cfg["shape"]["vocab_size"])
    parts = {}
    for backend, module in BACKENDS.items():
        if module and not importable(module):
            parts[backend] = skipped(CANNOT_TRAVEL[module])
            continue
        parts[backend] = train_backend(ctx, backend, dataset, cfg, peak, matmul)
    statuses = {k: p for k, p in parts.items()}
    statuses["packed_vs_alone"] = parts["sdpa"]["packed_vs_alone"]
    figures = {
        "assumed_peak_bf16_tflops": peak / 1e12 if peak else None,
        "measured_matmul_tflops": round(matmul / 1e12, 2),
        "matmul": "8192^3 bf16, mean of 10" if not ctx.dry_run else "256^3 fp32 on CPU",
        "mfu_formula": "6 * params * tokens/s / assumed peak",
        "backends": parts,
    }
    config = {k: v for k, v in cfg.items() if k != "shape"}
    config.update(shape="qwen2-1.5b" + (" (tiny twin)" if ctx.dry_run else ""), packing_strategy="bfd_split")
    config.update(padding_free=True, gradient_checkpointing=False, dtype=str(ctx.dtype).removeprefix("torch."))
    return result("pretrain_throughput", ctx, overall(statuses), figures, config=config)
