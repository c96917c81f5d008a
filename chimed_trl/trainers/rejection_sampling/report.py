"""What a round leaves for people and for the next stage: ranked records of kept answers, the reward plot."""

from __future__ import annotations

import json
from pathlib import Path

from chimed_trl.runfiles import write_atomic


def write_ranked(path: Path, prompts: list[dict], lines: list[dict]) -> int:
    """Kept answers, best first, as ranked records (a prompt needs two kept answers to make one)."""
    by_id = {p["id"]: p for p in prompts}
    kept: dict[str, list[dict]] = {}
    for x in lines:  # one response per text: with dedup_samples off, equal answers can both be kept
        if x["kept"] and all(y["text"] != x["text"] for y in kept.get(x["prompt_id"], [])):
            kept.setdefault(x["prompt_id"], []).append(x)
    records = []
    for pid, rows in kept.items():
        rows.sort(key=lambda x: -x["reward"])
        if len(rows) >= 2 and pid in by_id:
            records.append(
                {"prompt": by_id[pid]["prompt"], "responses": [x["text"] for x in rows],
                 "sources": [x["source"] for x in rows], "rewards": [x["reward"] for x in rows]}
            )  # fmt: skip
    write_atomic(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records))
    return len(records)


def plot_rewards(path: Path, rewards: list[list[float]], kept_means: list[float | None]) -> Path:
    """A box per round of the sampled answers' rewards, with the mean of the kept ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rewards) + 2), 3.5))
    ax.boxplot(rewards, showmeans=True)
    ax.set_xticks(range(1, len(rewards) + 1), [str(r) for r in range(len(rewards))])
    ax.plot(range(1, len(kept_means) + 1), kept_means, "o--", label="mean of kept answers")
    ax.set_xlabel("round (samples of the policy entering the round)")
    ax.set_ylabel("reward")
    ax.set_title("Reward of sampled answers by round")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
