"""Check 4: generation for rejection sampling, samples/s with transformers ``generate``.

A random-init Qwen2-0.5B-shaped causal LM in bf16 answers 256 prompts x 8 samples (temperature 0.7)
through ``chimed_trl.generation.TransformersGenerator``, the backend the rejection-sampling stage
uses without a server. A random model almost never samples EOS, so every sample runs the full
``max_new_tokens``: tokens/s is samples/s x max_new_tokens. vLLM is reported as skipped with its reason.
"""

from __future__ import annotations

import json
import time

from benchmarks.gpu.common import CANNOT_TRAVEL, REPO, Context, importable, overall, peak_memory, reset_memory, result
from benchmarks.gpu.common import skipped as skipped_part
from benchmarks.gpu.shapes import QWEN2_0_5B, build_model, model_config, tiny

SFT_SAMPLES = REPO / "chimed_trl" / "data" / "samples" / "sft.jsonl"


def settings(ctx: Context) -> dict:
    if ctx.dry_run:
        return dict(shape=tiny(QWEN2_0_5B), prompts=8, n=2, max_new_tokens=4, batch_size=4)
    return dict(shape=QWEN2_0_5B, prompts=256, n=8, max_new_tokens=256, batch_size=32)


def prompts(count: int) -> list[str]:
    """The bundled SFT samples' first user turns, repeated to ``count``."""
    rows = [json.loads(line) for line in SFT_SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows]
    return [questions[i % len(questions)] for i in range(count)]


def run(ctx: Context) -> dict:
    from transformers import GenerationConfig

    from chimed_trl.generation import SamplingParams, TransformersGenerator

    cfg = settings(ctx)
    tokenizer = ctx.tokenizer()
    reset_memory()
    model = build_model(model_config(cfg["shape"], tokenizer), ctx.device, ctx.dtype).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    generator = TransformersGenerator(model, tokenizer, batch_size=cfg["batch_size"])
    sampling = SamplingParams(n=cfg["n"], temperature=0.7, max_new_tokens=cfg["max_new_tokens"], seed=0)
    batch = prompts(cfg["prompts"])
    generator.generate(batch[: cfg["batch_size"]], sampling)  # warm-up: kernels, allocator
    start = time.perf_counter()
    outputs = generator.generate(batch, sampling)
    seconds = time.perf_counter() - start
    samples = sum(len(o) for o in outputs)
    shape_ok = len(outputs) == cfg["prompts"] and all(len(o) == cfg["n"] for o in outputs)
    parts = {
        "transformers": {"status": "passed"}
        if shape_ok
        else {"status": "failed", "reason": f"expected {cfg['prompts']} x {cfg['n']} completions"},
        "vllm": skipped_part(CANNOT_TRAVEL["vllm"])
        if not importable("vllm")
        else skipped_part("vLLM is importable but this suite measures the transformers backend only"),
    }
    figures = {
        "prompts": len(outputs),
        "samples": samples,
        # unrounded: a figure derived from a rounded time is off by the rounding (2% at 0.018 s); the report rounds
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "new_tokens_per_s_upper": samples * cfg["max_new_tokens"] / seconds,
        "nonempty_fraction": round(sum(bool(s) for o in outputs for s in o) / max(samples, 1), 4),
        **peak_memory(ctx),
        "parts": parts,
    }
    config = {k: v for k, v in cfg.items() if k != "shape"}
    config.update(shape="qwen2-0.5b" + (" (tiny twin)" if ctx.dry_run else ""), temperature=0.7)
    del model
    return result("generation", ctx, overall(parts), figures, config=config)
