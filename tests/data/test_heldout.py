"""The fixed held-out set of original pairs (chimed_trl.data.heldout)."""

import json

import pytest

from chimed_trl.data.heldout import load_heldout_pairs, original_pair, parse_eval_sources, without_heldout_prompts
from chimed_trl.errors import ConfigError

Q = [{"role": "user", "content": "头痛怎么办？"}]


# Catches: the held-out pair of an augmented list taken as its first two responses (accepted vs GPT-4) instead of the
# original accepted-vs-rejected pair, or ties resolved to a middle response. The list built from a pair must give
# the pair's own id: that is what lets a binary run and a listwise run prove they were scored on the same pairs.
def test_an_augmented_list_reduces_to_its_original_pair_with_the_same_id():
    pair = {"prompt": Q, "responses": ["到神经内科就诊。", "不用管。"], "ranks": [0, 1]}
    augmented = {"prompt": Q, "responses": ["到神经内科就诊。", "可能是偏头痛。", "多喝热水。", "不用管。"]}
    tied = {
        "prompt": Q,
        "responses": ["到神经内科就诊。", "可能是偏头痛。", "多喝热水。", "不用管。"],
        "ranks": [0, 1, 2, 2],
    }
    assert original_pair(augmented)["responses"] == ["到神经内科就诊。", "不用管。"]
    assert original_pair(augmented)["id"] == original_pair(pair)["id"] == original_pair(tied)["id"]
    swapped = {**pair, "responses": pair["responses"][::-1]}
    assert original_pair(swapped)["id"] != original_pair(pair)["id"]  # the order is part of the pair


# Catches: the held-out subset drawn with the training seed (two arms with different seeds would be scored on
# different pairs), a pair counted twice when count: upsamples, or held-out prompts left in training.
def test_heldout_subset_is_fixed_by_its_own_seed_and_its_prompts_leave_training(tmp_path):
    from datasets import Dataset

    path = tmp_path / "pairs.jsonl"
    rows = [
        {"question": f"问题{i}", "response_chosen": f"好答案{i}", "response_rejected": f"坏{i}"} for i in range(12)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    sources = parse_eval_sources([{"formatter": "cmd_reward", "path": str(path), "count": 4}])
    pairs = load_heldout_pairs(sources, seed=0)
    assert len(pairs) == 4 and [p["id"] for p in load_heldout_pairs(sources, seed=0)] == [p["id"] for p in pairs]
    assert {p["id"] for p in load_heldout_pairs(sources, seed=1)} != {p["id"] for p in pairs}
    everything = parse_eval_sources([{"formatter": "cmd_reward", "path": str(path), "count": 30}])
    assert len(load_heldout_pairs(everything, seed=0)) == 12  # upsampled to 30, counted once each
    lists = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": f"问题{i}"}], "responses": [f"好答案{i}", "中", f"坏{i}"]}
            for i in range(12)
        ]
    )
    kept, left_out = without_heldout_prompts(lists, pairs)
    held = {p["prompt"][0]["content"] for p in pairs}
    assert left_out == 4 and len(kept) == 8 and not held & {r["prompt"][0]["content"] for r in kept}


# Catches: a held-out source of another record format reaching the trainer as a traceback.
def test_eval_sources_of_another_format_are_one_line(tmp_path):
    from chimed_trl.data.heldout import check_eval_sources

    with pytest.raises(ConfigError, match=r"eval_datasets\[0\] \(sft\) gives conversation records"):
        check_eval_sources(parse_eval_sources([{"formatter": "sharegpt", "path": "x.jsonl", "name": "sft"}]))
    with pytest.raises(ConfigError, match=r"eval_datasets\[0\]: unknown keys \['pth'\]"):
        parse_eval_sources([{"formatter": "cmd_reward", "pth": "x.jsonl"}])
