"""Which sampled answers are kept (per prompt), and the round's statistics over the stored lines."""

from __future__ import annotations

import statistics


def select(
    texts: list[str],
    rewards: list[float],
    top_k: int,
    min_reward=None,
    min_margin=None,
    dedup=True,
    eligible: list[bool] | None = None,
):
    """Kept flags of one prompt's candidates: drop empty answers, duplicates and those under the floors, then top-k.

    The margin is taken over the prompt's mean reward; ties keep the earlier candidate. ``eligible`` (one flag
    per candidate) rules out answers that may not be trained on (truncated, too long): they still count for the
    mean and for duplicates, they are never kept. A ``None`` reward (no reward source had an opinion, as TRL's
    GRPO allows) is never kept and left out of the mean.
    """
    scored = [r for r in rewards if r is not None]
    mean = statistics.fmean(scored) if scored else 0.0
    eligible = eligible if eligible is not None else [True] * len(texts)
    seen, candidates = set(), []
    for i, (text, reward) in enumerate(zip(texts, rewards)):
        if not text.strip() or (dedup and text in seen):
            continue
        seen.add(text)
        if not eligible[i] or reward is None:
            continue
        if min_reward is not None and reward < min_reward:
            continue
        if min_margin is not None and reward < mean + min_margin:
            continue
        candidates.append(i)
    best = sorted(candidates, key=lambda i: (-rewards[i], i))[:top_k]
    return [i in best for i in range(len(texts))]


def duplicates(texts: list[str]) -> int:
    """Answers of one prompt that repeat an earlier answer of that prompt (what ``dedup_samples`` drops)."""
    return len(texts) - len(set(texts))


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct character n-grams over all n-grams (characters: Chinese has no spaces)."""
    grams = [t[i : i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _summary(values: list[float], prefix: str) -> dict:
    if not values:
        return {f"{prefix}_{k}": None for k in ("mean", "std", "min", "max")}
    return {
        f"{prefix}_mean": statistics.fmean(values),
        f"{prefix}_std": statistics.pstdev(values),
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
    }


def round_stats(lines: list[dict], dedup: bool = True) -> dict:
    """Counts and reward summaries of one round's stored lines (recomputable from ``samples.jsonl`` alone)."""
    samples = [x for x in lines if x["source"] == "policy"]
    kept = [x for x in lines if x["kept"]]
    texts = [x["text"] for x in samples]
    by_prompt: dict[str, list[str]] = {}
    for x in samples:
        by_prompt.setdefault(x["prompt_id"], []).append(x["text"])
    truncated = sum(bool(x.get("truncated")) for x in samples)
    scored = [x["reward"] for x in samples if x["reward"] is not None]
    return {
        "prompts": len({x["prompt_id"] for x in lines}),
        "samples": len(samples),
        "kept": len(kept),
        "kept_reference": sum(x["source"] == "reference" for x in kept),
        **_summary(scored, "reward"),
        "unscored": len(samples) - len(scored),
        **_summary([x["reward"] for x in kept], "kept_reward"),
        "acceptance_rate": sum(x["kept"] for x in samples) / len(samples) if samples else 0.0,
        "kept_share": sum(x["kept"] for x in samples) / len(samples) if samples else 0.0,
        "truncated": truncated,
        "truncated_share": truncated / len(samples) if samples else 0.0,
        "duplicates_dropped": sum(duplicates(t) for t in by_prompt.values()) if dedup else 0,
        "over_length_dropped": sum(bool(x.get("over_length")) for x in samples),
        "distinct_2": distinct_n(texts, 2),
        "mean_length": statistics.fmean(len(t) for t in texts) if texts else 0.0,
        "empty_answers": sum(not t.strip() for t in texts),
        **_source_means(samples),
    }


def _source_means(samples: list[dict]) -> dict:
    """``reward_func_means``: each reward source's mean over the samples it had an opinion on (with reward_funcs)."""
    names = list(dict.fromkeys(name for x in samples for name in x.get("rewards", {})))
    if not names:
        return {}
    values = {n: [x["rewards"][n] for x in samples if x.get("rewards", {}).get(n) is not None] for n in names}
    return {"reward_func_means": {n: statistics.fmean(v) if v else None for n, v in values.items()}}
