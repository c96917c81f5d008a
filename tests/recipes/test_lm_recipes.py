"""The pre-training and SFT recipes end to end on CPU: real scripts, real tiny model, real accelerate launch."""

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO, accelerate_launch

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args, timeout=600):
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def metrics(path):
    return json.loads((path / "metrics.json").read_text())


SECRET = "hf_DoNotWriteMe0123456789"


# Bugs caught: hub_token pickled into training_args.bin (run and checkpoints); a half-written newest checkpoint
# loaded on resume; metrics.json after a resume counting only the resumed part; a rerun into a finished run
# training 0 steps and overwriting metrics.json; a changed learning rate silently continuing the old run;
# no train.log; the model card's "fine-tuned version of [None]".
def test_pretrain_packs_trains_resumes_and_keeps_finished_runs(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "pretrain"
    common = [
        "--config",
        "recipes/tiny/pretrain.yaml",
        "--output_dir",
        str(out),
        "--model_name_or_path",
        str(tiny_model_dir),
    ]
    common += ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "5", "--save_total_limit", "2"]
    run([sys.executable, "recipes/pretrain.py", *common, "--hub_token", SECRET])
    first = metrics(out)
    assert first["stage"] == "pretrain" and first["steps"] == 10
    assert first["loss_last"] < first["loss_first"] and first["loss_finite"]
    assert first["packing"]["efficiency"] > 0.9 and first["packing"]["documents"] == 40
    assert first["data"][0]["skipped"] == {"empty text": 5}
    assert "learning_rate: 0.003" in (out / "resolved_config.yaml").read_text()
    assert [h["step"] for h in first["loss_history"]] == list(range(1, 11))
    assert "step 10:" in (out / "train.log").read_text()
    assert f"fine-tuned version of the local model `{tiny_model_dir}`" in (out / "README.md").read_text()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in written)
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]

    # a crash while writing checkpoint-10, before metrics.json: resume from checkpoint-5, warn about 10
    (out / "metrics.json").unlink()
    (out / "checkpoint-10" / "trainer_state.json").unlink()
    proc = run([sys.executable, "recipes/pretrain.py", *common])
    assert "skipping half-written checkpoint" in proc.stderr and f"resuming from {out / 'checkpoint-5'}" in proc.stderr
    second = metrics(out)
    # whole-run totals equal the uninterrupted run's, and the resumed steps replay the same losses
    assert second["steps"] == 10 and second["batches_per_rank"] == [10] and second["tokens"] == first["tokens"]
    assert [h["step"] for h in second["loss_history"]] == list(range(1, 11))
    for a, b in zip(first["loss_history"], second["loss_history"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)

    # the finished run is left alone; a changed hyper-parameter is refused, naming the key
    from chimed_trl.cli import run_recipe

    from .test_recipe_errors import TYPES, _recipe, fails_with_one_line

    before = (out / "metrics.json").read_bytes(), (out / "model.safetensors").stat().st_mtime_ns
    assert run_recipe(_recipe("pretrain").main, TYPES, [*common, "--num_train_epochs", "2"])["steps"] == 10
    assert ((out / "metrics.json").read_bytes(), (out / "model.safetensors").stat().st_mtime_ns) == before
    line = fails_with_one_line(capsys, "pretrain", [*common, "--learning_rate", "0.001"])
    assert "training.learning_rate: 0.003 -> 0.001" in line


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
            "--save_strategy",
            "no",
        ]
    )
    m = metrics(out)
    assert m["stage"] == "sft" and m["loss_finite"] and m["loss_last"] < m["loss_first"]
    # the loss history is kept without any checkpoint (save_strategy: no), one entry per logged step
    assert [h["step"] for h in m["loss_history"]] == list(range(1, m["steps"] + 1))
    assert not list(out.glob("checkpoint-*"))
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()  # adapters only


def test_accelerate_two_processes_on_cpu(tiny_model_dir, tmp_path):
    out = tmp_path / "sft2p"
    args = ["recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--output_dir", str(out)]
    args += ["--model_name_or_path", str(tiny_model_dir), "--ddp_backend", "gloo", "--num_train_epochs", "2"]
    proc = accelerate_launch("accelerate_configs/cpu_2proc.yaml", args, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    m = metrics(out)
    assert m["world_size"] == 2
    assert len(m["batches_per_rank"]) == 2 and all(n > 0 for n in m["batches_per_rank"])
    assert m["loss_finite"]
