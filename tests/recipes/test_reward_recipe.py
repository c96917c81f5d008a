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
@pytest.mark.parametrize("name", ["tiny/reward", "tiny/reward_lora", "chimed-gpt/reward", "lora/reward"])
def test_shipped_reward_configs_parse(name):
    from trl import TrlParser

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.reward import RewardScriptArguments
    from chimed_trl.trainers import ListwiseRewardConfig

    parser = TrlParser((RewardScriptArguments, ListwiseRewardConfig, ChimedModelConfig))
    argv = ["--config", str(REPO / f"recipes/{name}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    script, training, model = parser.parse_args_and_config(argv)
    assert training.loss_type in ("listmle", "pairwise", "bt") and script.datasets
    assert model.use_peft == ("lora" in name)
