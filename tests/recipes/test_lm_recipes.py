"""The pre-training and SFT recipes end to end on CPU: real scripts, real tiny model, real accelerate launch."""

import json
import os
import socket
import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args, timeout=600):
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def metrics(path):
    return json.loads((path / "metrics.json").read_text())


def test_pretrain_packs_trains_and_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "pretrain"
    common = ["recipes/pretrain.py", "--config", "recipes/tiny/pretrain.yaml", "--output_dir", str(out)]
    run([sys.executable, *common, "--model_name_or_path", str(tiny_model_dir), "--num_train_epochs", "4"])
    first = metrics(out)
    assert first["stage"] == "pretrain" and first["steps"] == 20
    assert first["loss_last"] < first["loss_first"] and first["loss_finite"]
    assert first["packing"]["efficiency"] > 0.9 and first["packing"]["documents"] == 40
    assert first["data"][0]["skipped"] == {"empty text": 5}
    assert (out / "resolved_config.yaml").exists() and (out / "data_stats.json").exists()
    assert "learning_rate: 0.003" in (out / "resolved_config.yaml").read_text()
    assert list(out.glob("checkpoint-20"))

    # resume: two more epochs continue from checkpoint-20 instead of starting over
    run([sys.executable, *common, "--model_name_or_path", str(tiny_model_dir), "--num_train_epochs", "6"])
    second = metrics(out)
    assert second["steps"] == 30 and second["batches_per_rank"] == [10]


def test_sft_lora_on_cpu(tiny_model_dir, tmp_path):
    out = tmp_path / "lora"
    run(
        [
            sys.executable,
            "recipes/sft.py",
            "--config",
            "recipes/tiny/sft_lora.yaml",
            "--output_dir",
            str(out),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--num_train_epochs",
            "2",
        ]
    )
    m = metrics(out)
    assert m["stage"] == "sft" and m["loss_finite"] and m["loss_last"] < m["loss_first"]
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()  # adapters only


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_two_processes_on_cpu(tiny_model_dir, tmp_path):
    out = tmp_path / "sft2p"
    run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "accelerate_configs/cpu_2proc.yaml",
            "--main_process_port",
            str(_free_port()),
            "recipes/sft.py",
            "--config",
            "recipes/tiny/sft.yaml",
            "--output_dir",
            str(out),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--ddp_backend",
            "gloo",
            "--num_train_epochs",
            "2",
        ]
    )
    m = metrics(out)
    assert m["world_size"] == 2
    assert len(m["batches_per_rank"]) == 2 and all(n > 0 for n in m["batches_per_rank"])
    assert m["loss_finite"]
