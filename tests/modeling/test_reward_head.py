"""chimed_trl.modeling.reward_head: the one set of checks that a model gives exactly one score per sequence."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from chimed_trl.errors import UserError
from chimed_trl.modeling.reward_head import check_reward_dir, check_reward_head, reward_head


def test_directory_checks_refuse_what_is_not_a_one_score_model(tiny_model_dir, tmp_path):
    """catches: a 2-label classifier or a causal LM directory accepted as a reward model (the causal LM would be
    scored by a randomly initialised head), or a causal-LM adapter taken for a reward adapter."""
    assert check_reward_dir(tiny_model_dir / "reward") is False  # full weights, one score: accepted
    two = tmp_path / "two"
    shutil.copytree(tiny_model_dir / "reward", two)
    config = json.loads((two / "config.json").read_text())
    (two / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(UserError, match="has 2 labels; a reward model has exactly one score"):
        check_reward_dir(two)
    with pytest.raises(UserError, match="is a causal LM, not a reward model"):
        check_reward_dir(tiny_model_dir)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    with pytest.raises(UserError, match="adapter task_type is 'CAUSAL_LM'"):
        check_reward_dir(adapter)


def test_loaded_model_check_sees_through_peft(tiny_model_dir):
    """catches: the head looked up on the wrapper only (a LoRA reward model refused, or a 3-output head inside a
    PeftModel accepted); the head found is the model's own ``score`` layer."""
    from peft import LoraConfig, get_peft_model

    one = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward", num_labels=1)
    wrapped = get_peft_model(one, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]))
    check_reward_head(wrapped)
    assert reward_head(wrapped) is one.score  # peft wrapped the model in place: its score layer, trained copy inside
    three = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    three_wrapped = get_peft_model(three, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]))
    with pytest.raises(UserError, match=r"reward model rm: its head gives 3 outputs .*single score"):
        check_reward_head(three_wrapped, "rm")
    with pytest.raises(UserError, match="has no `score` head"):
        check_reward_head(torch.nn.Linear(4, 1))
