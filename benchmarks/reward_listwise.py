"""Wall time per epoch: one-pass listwise trainer vs TRL's RewardTrainer on the 6 expanded pairs of each K=4 list.

    python benchmarks/reward_listwise.py [--lists 48] [--hidden 256] [--layers 4]

Same lists, same model (the tiny tokenizer and a random-init Qwen2 of the given size, so that compute rather than
Python overhead dominates), same sequences per step (4 lists = 16 sequences vs 8 pairs = 16 sequences), one epoch
each, in one process. Prints JSON with both times and the ratio (target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from itertools import combinations
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification
from trl import RewardConfig, RewardTrainer

from chimed_trl.tiny import build_tiny
from chimed_trl.trainers import ListwiseRewardConfig, ListwiseRewardTrainer

WORDS = "头痛 发热 咳嗽 高血压 糖尿病 建议 检查 心内科 消化内科 服用 药物 休息 饮食 运动 复查 医生".split()


def ranked_lists(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    lists = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"问题{i}：" + "".join(rng.choices(WORDS, k=6))}]
        responses = ["".join(rng.choices(WORDS, k=rng.randint(20, 30))) + f"{i}-{k}" for k in range(4)]
        lists.append({"prompt": prompt, "responses": responses})
    return lists


def expand_pairs(lists: list[dict]) -> list[dict]:
    return [
        {
            "prompt": r["prompt"],
            "chosen": [{"role": "assistant", "content": r["responses"][i]}],
            "rejected": [{"role": "assistant", "content": r["responses"][j]}],
        }
        for r in lists
        for i, j in combinations(range(len(r["responses"])), 2)
    ]


def model(tokenizer, hidden: int, layers: int):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForSequenceClassification(config)


def epoch_time(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lists", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    tokenizer = AutoTokenizer.from_pretrained(build_tiny(tmp / "tiny"))
    lists = ranked_lists(args.lists)
    pairs = expand_pairs(lists)
    common = dict(
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        num_train_epochs=1,
        logging_steps=1000,
        learning_rate=1e-4,
        seed=0,
        dataloader_num_workers=0,
    )
    ours = ListwiseRewardTrainer(
        model(tokenizer, args.hidden, args.layers),
        ListwiseRewardConfig(str(tmp / "ours"), loss_type="pairwise", per_device_train_batch_size=4, **common),
        train_dataset=Dataset.from_list(lists),
        processing_class=tokenizer,
    )
    stock = RewardTrainer(
        model(tokenizer, args.hidden, args.layers),
        RewardConfig(str(tmp / "stock"), per_device_train_batch_size=8, **common),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    ours_s, stock_s = epoch_time(ours), epoch_time(stock)  # interleave a second round to even out machine noise
    ours_s2, stock_s2 = epoch_time(ours), epoch_time(stock)
    ours_t, stock_t = min(ours_s, ours_s2), min(stock_s, stock_s2)
    tokens = sum(len(ids) for row in ours.train_dataset["response_ids"] for ids in row)
    print(
        json.dumps(
            {
                "lists": len(lists),
                "pairs": len(pairs),
                "sequences_per_epoch": {"listwise": 4 * len(lists), "stock_pairs": 2 * len(pairs)},
                "tokens_per_epoch_listwise": tokens,
                "model": {"hidden": args.hidden, "layers": args.layers},
                "epoch_seconds": {"listwise": round(ours_t, 2), "stock_pairs": round(stock_t, 2)},
                "all_runs_seconds": {"listwise": [ours_s, ours_s2], "stock_pairs": [stock_s, stock_s2]},
                "ratio": round(ours_t / stock_t, 3),
                "target": "<= 0.5",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
