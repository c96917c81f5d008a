"""Does the binary (best vs worst) reward model overfit where the 4-way listwise ones do not?

    python benchmarks/reward_overfit.py [--train 48] [--test 48] [--steps 60] [--out benchmarks/reward_overfit.png]

Ranked data with a known quality order the tiny model can learn: each response mixes "good" clinical words and
filler; quality = number of good words (3 > 2 > 1 > 0), so the best and worst differ most and the middle pairs are the
hard ones. (a) ``bt`` trains on the (best, worst) pairs only, (b) ``listmle`` and (c) ``pairwise`` on the full 4-way
lists; same model init, steps, batch (lists) and seed. Every ``--every`` steps, pairwise accuracy over all 6 pairs
of each list on the train lists and on held-out lists. Prints JSON, writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from chimed_trl.tiny import build_tiny
from chimed_trl.trainers import ListwiseRewardConfig, ListwiseRewardTrainer

GOOD = "检查 确诊 复查 规律服药 专科就诊 监测 随访".split()
FILLER = "然后 可能 一般 这个 那个 情况 注意 有些 还是 比较".split()


def ranked_lists(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lists = []
    for i in range(n):
        responses = []
        for n_good in (3, 2, 1, 0):
            words = rng.sample(GOOD, n_good) + rng.choices(FILLER, k=6 - n_good)
            rng.shuffle(words)
            responses.append("，".join(words) + "。")
        lists.append({"prompt": [{"role": "user", "content": f"病例{seed}-{i}：怎么处理？"}], "responses": responses})
    return lists


class Track(TrainerCallback):
    def __init__(self, trainer, train, test, every):
        self.trainer, self.train, self.test, self.every, self.rows = trainer, train, test, every, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            model = self.trainer.model
            acc = {}
            for name, data in (("train", self.train), ("held_out", self.test)):
                acc[name] = self.trainer.evaluate(data)["eval_pairwise_accuracy"]
            model.train()
            self.rows.append({"step": state.global_step, **acc})


def run(loss_type, train, test, tokenizer, model_dir, args, tmp) -> list[dict]:
    data = [dict(r, responses=[r["responses"][0], r["responses"][-1]]) for r in train] if loss_type == "bt" else train
    config = ListwiseRewardConfig(
        str(tmp / loss_type),
        loss_type=loss_type,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        seed=0,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    trainer = ListwiseRewardTrainer(model, config, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    evaluation = [
        trainer._prepare_dataset(Dataset.from_list(d), tokenizer, config, n) for n, d in (("tr", train), ("te", test))
    ]
    track = Track(trainer, *evaluation, args.every)
    trainer.add_callback(track)
    trainer.train()
    return track.rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=48)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/reward_overfit.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    model_dir = build_tiny(tmp / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, test = ranked_lists(args.train, seed=1), ranked_lists(args.test, seed=2)
    curves = {loss: run(loss, train, test, tokenizer, model_dir, args, tmp) for loss in ("bt", "listmle", "pairwise")}
    print(json.dumps(curves, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (loss, rows), color in zip(curves.items(), ("tab:red", "tab:blue", "tab:green")):
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["train"] for r in rows], color=color, linestyle="--", label=f"{loss} train")
        ax.plot(steps, [r["held_out"] for r in rows], color=color, label=f"{loss} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("pairwise accuracy (all 6 pairs)")
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
