"""Check 3a: one GPU, DeepSpeed ZeRO-3, the SFT recipe, launched the way users launch it.

``accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 1 recipes/sft.py
--config recipes/tiny/sft.yaml`` with a saved random-init Qwen2-0.5B-shaped model and the bundled SFT
samples, bf16, a few steps. It passes when the recipe exits 0 and its ``metrics.json`` reports every
step, one process and finite losses. The CPU dry run launches the same recipe and overrides through
``accelerate_configs/cpu_2proc.yaml`` (1 process), or through the ZeRO-3 config with ``--deepspeed-on-cpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from benchmarks.gpu.common import REPO, Context, result
from benchmarks.gpu.shapes import QWEN2_0_5B, build_model, model_config, tiny

ZERO3 = REPO / "accelerate_configs" / "deepspeed_zero3.yaml"
CPU = REPO / "accelerate_configs" / "cpu_2proc.yaml"
RECIPE_CONFIG = REPO / "recipes" / "tiny" / "sft.yaml"


def save_model(ctx: Context, path) -> None:
    shape = tiny(QWEN2_0_5B) if ctx.dry_run else QWEN2_0_5B
    model = build_model(model_config(shape, ctx.tokenizer()), ctx.device, torch.bfloat16)
    model.save_pretrained(path)
    ctx.tokenizer().save_pretrained(path)
    del model


def command(ctx: Context, model_dir, output_dir, steps: int) -> list[str]:
    from chimed_trl.generation import free_port

    config = ZERO3 if not ctx.dry_run or ctx.deepspeed_on_cpu else CPU
    launch = ["--config_file", str(config), "--num_processes", "1", "--main_process_port", str(free_port())]
    if ctx.dry_run:
        launch += ["--mixed_precision", "no"]
    overrides = {
        "model_name_or_path": model_dir,
        "output_dir": output_dir,
        "build_tiny_model": "false",
        "max_steps": steps,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "bf16": str(not ctx.dry_run).lower(),
        "use_cpu": str(ctx.dry_run).lower(),
        "dtype": "float32" if ctx.dry_run else "bfloat16",
        "gradient_checkpointing": str(not ctx.dry_run).lower(),
    }
    if ctx.dry_run and config == CPU:
        overrides["ddp_backend"] = "gloo"
    recipe = [str(REPO / "recipes" / "sft.py"), "--config", str(RECIPE_CONFIG)]
    recipe += [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, *recipe]


def run(ctx: Context) -> dict:
    steps = 1 if ctx.dry_run else 5
    model_dir, output_dir = ctx.subdir("zero3-model"), ctx.subdir("zero3-out")
    save_model(ctx, model_dir)
    cmd = command(ctx, model_dir, output_dir, steps)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    config = {
        "launcher": os.path.relpath(cmd[cmd.index("--config_file") + 1], REPO),
        "recipe": "recipes/sft.py --config recipes/tiny/sft.yaml",
        "shape": "qwen2-0.5b" + (" (tiny twin)" if ctx.dry_run else ""),
        "max_steps": steps,
    }
    metrics_path = output_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_path.exists():
        tail = (proc.stdout[-800:] + proc.stderr[-2500:]).strip()
        return result("zero3_sft", ctx, "failed", reason=f"exit {proc.returncode}: {tail}", config=config)
    metrics = json.loads(metrics_path.read_text())
    figures = {
        "steps": metrics["steps"],
        "world_size": metrics["world_size"],
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "tokens": metrics["tokens"],
        "train_wall_s": metrics["wall_time_s"],
        "wall_s": round(wall, 2),
    }
    ok = metrics["steps"] == steps and metrics["world_size"] == 1 and metrics["loss_finite"]
    reason = None if ok else f"metrics.json: steps {metrics['steps']}/{steps}, finite {metrics['loss_finite']}"
    return result("zero3_sft", ctx, "passed" if ok else "failed", figures, config=config, reason=reason)
