"""Formatter throughput: a generated 200k-row CMD-SFT-shaped JSONL file -> canonical conversations.

Measures the full path a recipe uses (read + decode + JSON parse + ``cmd_sft`` + validation + empty
check), single process. Target: >= 20k records/s on 2 cores.

    python benchmarks/formatting.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from chimed_trl.data.sources import SourceConfig, SourceStats, iter_records

PARTS = [
    "头痛",
    "发热",
    "咳嗽",
    "腹泻",
    "失眠",
    "胸闷",
    "高血压",
    "糖尿病",
    "胃炎",
    "湿疹",
    "三天",
    "一周",
    "加重",
    "夜间",
]


def make_file(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            instruction = "".join(rng.choices(PARTS, k=rng.randint(4, 20))) + "怎么办？"
            output = "，".join(rng.choices(PARTS, k=rng.randint(10, 80))) + "。"
            record = {
                "instruction": instruction,
                "input": "" if i % 3 else "病史" + rng.choice(PARTS),
                "output": output,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cmd_sft.jsonl"
        make_file(path, args.rows)
        stats = SourceStats("cmd_sft")
        start = time.perf_counter()
        n = sum(1 for _ in iter_records(SourceConfig(card="cmd_sft", path=str(path)), stats))
        elapsed = time.perf_counter() - start
    result = {"rows": args.rows, "records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
