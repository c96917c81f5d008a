"""The reward recipe end to end on CPU: real script, real tiny model, real 2-process accelerate launch."""

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO, accelerate_launch

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# Catches: ragged tensors gathered across processes (gloo crashes), metrics.json missing or written before the
# held-out metrics, and a trainer that does not learn the quality order: the sample lists (accepted > detailed >
# vague > rejected) are learnable, so seeded held-out pairwise accuracy must be far above chance (0.5).
@pytest.mark.slow
def test_two_process_reward_run_learns_the_ranking(tiny_model_dir, tmp_path):
    out = tmp_path / "rm2p"
    args = ["recipes/reward.py", "--config", "recipes/tiny/reward.yaml"]
    args += ["--output_dir", str(out), "--model_name_or_path", str(tiny_model_dir), "--ddp_backend", "gloo"]
    args += ["--test_size", "9"]  # 9 held-out lists: uneven across the 2 processes
    proc = accelerate_launch("accelerate_configs/cpu_2proc.yaml", args, env=ENV)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["loss_finite"] and metrics["loss_last"] < metrics["loss_first"]
    held_out = metrics["eval"]
    assert held_out["pairwise_accuracy"] >= 0.8 and held_out["kendall_tau"] > 0.5
    assert metrics["data_report"]["eval"]["lists_kept"] == 9
    # the gathered per-list statistics drop the evaluation sampler's duplicated padding lists: 9 lists x 6 pairs
    assert held_out["reward_rank_0"] > held_out["reward_rank_3"]
    assert held_out["reward_source_accepted"] > held_out["reward_source_rejected"]
    assert (out / "model.safetensors").exists() and (out / "resolved_config.yaml").exists()


# Catches: a bad row reaching the trainer as a traceback instead of one line naming the file, line and field.
def test_bad_ranked_file_is_one_clear_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "ranked.jsonl"
    good = {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b"]}
    dup = {"prompt": [{"role": "user", "content": "q2"}], "responses": ["a", "a"]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(dup) + "\n", encoding="utf-8")
    config = tmp_path / "reward.yaml"
    yaml_text = (REPO / "recipes/tiny/reward.yaml").read_text()
    config.write_text(yaml_text.replace("chimed_trl/data/samples/ranked.jsonl", str(bad)), encoding="utf-8")
    cmd = [sys.executable, "recipes/reward.py", "--config", str(config), "--output_dir"]
    cmd += [str(tmp_path / "out"), "--model_name_or_path", str(tiny_model_dir), "--test_size", "0"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{bad}:2: field 'responses': duplicate responses" in proc.stderr
    assert "Traceback" not in proc.stderr
    # validated before anything is kept: the refused run leaves no resolved_config.yaml or empty train.log behind
    assert not (tmp_path / "out").exists()


# Catches: max_length 0 reaching the trainer (every sequence truncated to nothing: a torch traceback mid-run) instead
# of a one-line error naming the key before any model is loaded.
@pytest.mark.parametrize("value", ["0"])
def test_non_positive_max_length_is_one_clear_error(tiny_model_dir, tmp_path, value):
    cmd = [sys.executable, "recipes/reward.py", "--config", "recipes/tiny/reward.yaml", "--output_dir"]
    cmd += [str(tmp_path / "out"), "--model_name_or_path", str(tiny_model_dir), "--max_length", value]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: max_length must be a positive number of tokens (or null for no limit), got {value}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# Catches: a reward config with a key no dataclass knows (TrlParser would refuse it at launch on the cluster), or a
# loss_type typo in the shipped configs.
@pytest.mark.parametrize(
    "name",
    ["tiny/reward", "tiny/reward_lora", "chimed-gpt/reward", "lora/reward"]
    + ["tiny/ablation_reward_binary", "tiny/ablation_reward_listwise", "chimed-gpt/ablation_reward_binary"],
)
def test_shipped_reward_configs_parse(name):
    from trl import TrlParser

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.stages.reward import RewardScriptArguments
    from chimed_trl.trainers import ListwiseRewardConfig

    parser = TrlParser((RewardScriptArguments, ListwiseRewardConfig, ChimedModelConfig))
    argv = ["--config", str(REPO / f"recipes/{name}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    script, training, model = parser.parse_args_and_config(argv)
    assert training.loss_type in ("listmle", "pairwise", "bt") and script.datasets
    assert model.use_peft == ("lora" in name)


def heldout_pair_scores(run_dir, pairs):
    """(chosen, rejected) scores of each held-out pair, with plain transformers: the score head on the last token's
    hidden state of the unpadded chat-formatted prompt+response (no code of the package)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir, num_labels=1).eval()
    scores = []
    for pair in pairs:
        row = []
        for response in pair["responses"]:
            messages = pair["prompt"] + [{"role": "assistant", "content": response}]
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            with torch.no_grad():
                hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
                row.append((model.score.weight @ hidden).item())
        scores.append(row)
    return scores


# Catches: held-out pairs that are not the source's original pairs, held-out prompts left in training, a held-out
# curve that is not logged at every eval_steps (or only at the end), and a final held-out accuracy that is not the
# saved model's: it is recomputed here from the saved weights with plain transformers on heldout_pairs.jsonl.
def test_fixed_heldout_pairs_are_scored_every_eval_steps(tiny_model_dir, tmp_path):
    out = tmp_path / "rm"
    cmd = [sys.executable, "recipes/reward.py", "--config", "recipes/tiny/ablation_reward_binary.yaml"]
    cmd += ["--output_dir", str(out), "--model_name_or_path", str(tiny_model_dir), "--max_steps", "4"]
    cmd += ["--eval_steps", "2", "--train_sample_size", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    pairs = [json.loads(line) for line in (out / "heldout_pairs.jsonl").read_text().splitlines()]
    source = [
        json.loads(line) for line in (REPO / "chimed_trl/data/samples/reward_pairs.jsonl").read_text().splitlines()
    ]
    originals = {(r["question"], r["response_chosen"], r["response_rejected"]) for r in source}
    assert len(pairs) == 10 and metrics["heldout"]["pair_ids"] == [p["id"] for p in pairs]
    assert all((p["prompt"][0]["content"], *p["responses"]) in originals for p in pairs)
    assert metrics["data_report"]["train"]["lists_in"] == 40 - 10  # the held-out questions left training
    history = metrics["log_history"]
    for name in ("heldout", "train_sample"):
        steps = [h["step"] for h in history if f"eval_{name}_pairwise_accuracy" in h]
        assert steps[:3] == [0, 2, 4], name  # at the start, every eval_steps, then once more for the final model
    scores = heldout_pair_scores(out, pairs)
    recomputed = sum(chosen > rejected for chosen, rejected in scores) / len(scores)
    assert metrics["eval"]["pairwise_accuracy"] == pytest.approx(recomputed)
    margin = sum(chosen - rejected for chosen, rejected in scores) / len(scores)
    assert metrics["eval"]["margin"] == pytest.approx(margin, rel=1e-3, abs=1e-4)


# Catches: a fixed held-out set and an automatic split both given (which one scores the model?) reaching training.
def test_eval_datasets_with_test_size_is_one_line(tiny_model_dir, tmp_path):
    cmd = [sys.executable, "recipes/reward.py", "--config", "recipes/tiny/ablation_reward_binary.yaml", "--output_dir"]
    cmd += [str(tmp_path / "out"), "--model_name_or_path", str(tiny_model_dir), "--test_size", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        "error: give eval_datasets (a fixed held-out set) or test_size (a split of datasets), not both" in proc.stderr
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
