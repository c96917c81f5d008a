"""Reward callables (``reward_funcs``, TRL GRPO style) in rejection sampling: alone, weighted with a reward model,
``None`` as "no opinion", and bad input as one line naming the config key.

Every expected reward is computed here by hand from the texts written to ``samples.jsonl``, never by the package.
"""

import json
import statistics
from collections import Counter

import pytest

from chimed_trl.errors import UserError
from chimed_trl.scoring import CombinedReward, repetition_penalty, template_leak_penalty
from chimed_trl.trainers.rejection_sampling import RejectionSamplingTrainer

from ..test_rejection_sampling import config, lines, names_department, prompts


def repeats_by_hand(text: str) -> float:
    """Minus the share of character bigrams that repeat an earlier one, counted with a Counter."""
    bigrams = [a + b for a, b in zip(text, text[1:])]
    if not bigrams:
        return 0.0
    return -sum(n - 1 for n in Counter(bigrams).values()) / len(bigrams)


def answer_chars(prompts, completions, **kwargs):
    """A test reward named by dotted path: the answer's length in characters (TRL's conversational form)."""
    return [float(len(c[0]["content"])) for c in completions]


def best_by_hand(rows: list[dict], reward) -> int:
    """The sample kept with top_k=1: highest reward among non-empty, first-seen, trainable answers; ties: earlier."""
    seen, best = set(), None
    for x in sorted(rows, key=lambda x: x["sample"]):
        if not x["text"].strip() or x["text"] in seen:
            continue
        seen.add(x["text"])
        if x["over_length"] or (best is not None and reward(x) <= reward(best)):
            continue
        best = x
    return best["sample"]


def test_a_reward_callable_alone_ranks_the_samples(tiny_model_dir, tmp_path):
    """No reward model: the built-in repetition_penalty, named by dotted path as in YAML, decides what is kept.

    Bugs caught: the callable's values not reaching `reward` (e.g. the reward model still required, or the
    scores of another sample), the ranking not following the combined reward, completions handed over in the
    wrong form (the built-in reads TRL's message form), per-function means missing from stats.json.
    """
    out = tmp_path / "rs"
    # 3 candidate tokens per step: repeated bigrams are common, so the rewards spread
    args = config(out, sampling_top_k=3, max_steps=1, reward_funcs=["chimed_trl.scoring.repetition_penalty"])
    RejectionSamplingTrainer(str(tiny_model_dir), args=args, train_dataset=prompts(4)).train()
    stored = lines(out / "round_0" / "samples.jsonl")
    assert len(stored) == 16
    for x in stored:
        assert x["reward"] == pytest.approx(repeats_by_hand(x["text"]), abs=1e-12)
        assert x["rewards"] == {"repetition_penalty": pytest.approx(repeats_by_hand(x["text"]), abs=1e-12)}
    assert len({x["reward"] for x in stored}) > 1  # the ranking is not a tie broken by order
    for pid in {x["prompt_id"] for x in stored}:
        rows = [x for x in stored if x["prompt_id"] == pid]
        assert [x["sample"] for x in rows if x["kept"]] == [best_by_hand(rows, lambda x: repeats_by_hand(x["text"]))]
    stats = json.loads((out / "round_0" / "stats.json").read_text())
    mean = statistics.fmean(repeats_by_hand(x["text"]) for x in stored)
    assert stats["reward_func_means"] == {"repetition_penalty": pytest.approx(mean, abs=1e-12)}


def test_weights_combine_the_reward_model_and_the_callables_as_a_weighted_sum(tiny_model_dir, tmp_path):
    """reward = 1.0 * reward model + 2.0 * repetition_penalty - 0.1 * answer length, by hand for every sample.

    Bugs caught: weights applied in the wrong order (the reward model must count as the first), unweighted
    sums, a mean instead of a sum, a dotted path to a test module not imported.
    """
    out = tmp_path / "rs"
    funcs = [repetition_penalty, "tests.trainers.rejection_sampling.test_rewards.answer_chars"]
    args = config(out, sampling_top_k=3, max_steps=1, reward_funcs=funcs, reward_weights=[1.0, 2.0, -0.1])
    RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, prompts(3)).train()
    stored = lines(out / "round_0" / "samples.jsonl")

    def by_hand(x):
        return float("科" in x["text"]) + 2.0 * repeats_by_hand(x["text"]) - 0.1 * len(x["text"])

    for x in stored:
        assert x["reward"] == pytest.approx(by_hand(x), abs=1e-9)
        assert x["rewards"]["answer_chars"] == len(x["text"])
    for pid in {x["prompt_id"] for x in stored}:
        rows = [x for x in stored if x["prompt_id"] == pid]
        assert [x["sample"] for x in rows if x["kept"]] == [best_by_hand(rows, by_hand)]
    means = json.loads((out / "round_0" / "stats.json").read_text())["reward_func_means"]
    assert list(means) == ["reward_model", "repetition_penalty", "answer_chars"]
    assert means["answer_chars"] == pytest.approx(statistics.fmean(len(x["text"]) for x in stored))


def only_long(prompts, completions, **kwargs):
    """No opinion (None) on answers under 3 characters."""
    return [None if len(c[0]["content"]) < 3 else 10.0 for c in completions]


def silent(prompts, completions, **kwargs):
    return [None] * len(completions)


def test_none_is_no_opinion_as_in_trl_grpo():
    """None leaves the function out of that answer's sum (TRL's nansum); no opinion at all gives None.

    Bugs caught: None read as 0 (or as a crash), an all-None answer scored 0 and kept, kwargs columns not passed.
    """
    reward = CombinedReward(funcs=[only_long, template_leak_penalty, silent], weights=[0.5, 3.0, 1.0])
    combined, per_source = reward([[{"role": "user", "content": "q"}]] * 3, ["好的", "多喝热水。", "<|im_end|>"])
    assert combined == [3.0 * 0.0, 0.5 * 10 + 0.0, 0.5 * 10 + 3.0 * -1.0]
    assert per_source["only_long"] == [None, 10.0, 10.0] and per_source["silent"] == [None] * 3
    nobody = CombinedReward(funcs=[silent])
    assert nobody([[{"role": "user", "content": "q"}]], ["a"])[0] == [None]
    # TRL's own reward functions plug in by dotted path: they read the conversational completion form
    trl_reward = CombinedReward(funcs=["trl.rewards.think_format_reward"])
    assert trl_reward([[], []], ["<think>\n想想\n</think>\n答案", "答案"])[0] == [1.0, 0.0]


def test_built_in_rewards_by_hand():
    """Bugs caught: the repetition share over characters instead of bigrams, a leak check missing a new turn."""
    assert repetition_penalty([None] * 3, ["多喝水多喝水", "好", "头痛"]) == [-2 / 5, 0.0, 0.0]  # 多喝 喝水 repeat
    leaks = ["请多喝水。", "", "  ", "好的<|im_start|>user", "答：\nuser: 还有", "结束</s>", "用户说 user 很好"]
    assert template_leak_penalty([None] * 7, leaks) == [0.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0]


def two_scores(prompts, completions, **kwargs):
    return [1.0, 2.0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        # bug: an ImportError traceback, or the key not named
        ({"reward_funcs": ["no_such_pkg.rules.length_penalty"]}, r"reward_funcs\[0\]='no_such_pkg.rules.length_pen"),
        ({"reward_funcs": ["chimed_trl.scoring.no_such_rule"]}, r"reward_funcs\[0\]=.*cannot import"),
        ({"reward_funcs": ["length_penalty"]}, r"reward_funcs\[0\]='length_penalty': expected a dotted path"),
        # bug: weights silently zipped short (the reward model must count as one)
        ({"reward_funcs": ["chimed_trl.scoring.repetition_penalty"], "reward_weights": [1.0]},
         r"reward_weights has 1 values for 2 rewards \(reward_model, repetition_penalty"),
    ],
)  # fmt: skip
def test_bad_reward_config_is_one_line_naming_the_key(overrides, message, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=message) as err:
        RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(tmp_path / "rs", **overrides), prompts(2)
        )
    assert "\n" not in str(err.value)


def test_a_reward_module_that_fails_to_import_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    """Bug caught: only ImportError/AttributeError were caught, so a SyntaxError in the user's rules module was a
    traceback (exit 1) that also left data_stats.json + train.log behind: the rerun was refused as a foreign dir."""
    (tmp_path / "broken_rules.py").write_text("def length_penalty(:\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = config(tmp_path / "rs", reward_funcs=["broken_rules.length_penalty"])
    with pytest.raises(
        UserError, match=r"^reward_funcs\[0\]='broken_rules.length_penalty': cannot import it \(Syntax"
    ):
        RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, prompts(2))


def test_a_callable_returning_the_wrong_number_of_scores_is_one_line(tiny_model_dir, tmp_path):
    """Bug caught: a zip that silently drops the answers without a score (or an IndexError mid-round)."""
    args = config(tmp_path / "rs", reward_funcs=[two_scores], max_steps=1)
    trainer = RejectionSamplingTrainer(str(tiny_model_dir), args=args, train_dataset=prompts(2))
    with pytest.raises(UserError, match=r"reward_funcs: two_scores returned 2 scores for 8 answers"):
        trainer.train()
