"""Check 3b: one training step of the listwise reward model (``ListwiseRewardTrainer``, ListMLE loss).

A random-init Qwen2-0.5B-shaped sequence classifier (one logit) in bf16 trains on the bundled ranked
records (``chimed_trl/data/samples/ranked.jsonl``: a prompt and 4 responses, best first) for a few
steps. Figures: step time, peak memory, losses finite. Skipped with a reason while the trainer is not
part of the package.
"""

from __future__ import annotations

import json

import torch

from benchmarks.gpu.common import REPO, Context, StepTimer, peak_memory, reset_memory, result
from benchmarks.gpu.shapes import QWEN2_0_5B, build_model, model_config, tiny

RANKED = REPO / "chimed_trl" / "data" / "samples" / "ranked.jsonl"


def load_trainer_classes():
    """(config class, trainer class) from the package, or None when the package does not have them yet."""
    import importlib

    for module in ("chimed_trl", "chimed_trl.trainers"):  # the public export, else the trainers package
        try:
            found = importlib.import_module(module)
            return found.ListwiseRewardConfig, found.ListwiseRewardTrainer
        except (ImportError, AttributeError):
            continue
    return None


def ranked_dataset():
    from datasets import Dataset

    rows = [json.loads(line) for line in RANKED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": r["prompt"], "responses": r["responses"]} for r in rows])


def run(ctx: Context) -> dict:
    classes = load_trainer_classes()
    if classes is None:
        return result("listwise_reward", ctx, "skipped", reason="skipped: ListwiseRewardTrainer not available")
    config_cls, trainer_cls = classes
    steps = 1 if ctx.dry_run else 5
    shape = tiny(QWEN2_0_5B) if ctx.dry_run else QWEN2_0_5B
    tokenizer = ctx.tokenizer()
    reset_memory()
    model = build_model(model_config(shape, tokenizer, num_labels=1), ctx.device, ctx.dtype, task="reward")
    args = config_cls(
        output_dir=str(ctx.subdir("reward-out")),
        loss_type="listmle",
        max_steps=steps,
        per_device_train_batch_size=4,
        max_length=1024,
        gradient_checkpointing=not ctx.dry_run,
        learning_rate=1e-5,
        **ctx.trainer_flags(),
    )
    timer = StepTimer()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=ranked_dataset(), processing_class=tokenizer, callbacks=[timer]
    )
    trainer.train()
    figures = {
        "step_s": round(timer.steady(1), 4),
        "loss_first": timer.losses[0] if timer.losses else None,
        "loss_last": timer.losses[-1] if timer.losses else None,
        **peak_memory(ctx),
    }
    ok = timer.losses_finite() and len(timer.times) == steps
    config = {"shape": "qwen2-0.5b seq-cls" + (" (tiny twin)" if ctx.dry_run else ""), "loss_type": "listmle"}
    config.update(lists_per_step=4, responses_per_list=len(ranked_dataset()[0]["responses"]), max_steps=steps)
    reason = None if ok else f"losses {timer.losses} over {len(timer.times)} of {steps} steps"
    del trainer, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return result("listwise_reward", ctx, "passed" if ok else "failed", figures, config=config, reason=reason)
