"""The GPU suite's CPU dry run, run as users run it (``python -m benchmarks.gpu --dry-run``), and its pieces.

Every check builds its model config and data at tiny shapes and takes one optimizer step through the
same code as the GPU run; each test checks the reported figures against a count made here by hand.
"""

import json
import math
import os
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml

from ..conftest import REPO

CHECKS = {"device", "pretrain_throughput", "qlora_memory", "zero3_sft", "listwise_reward", "generation"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV["PYTHONPATH"] = os.pathsep.join([str(REPO), ENV.get("PYTHONPATH", "")])


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of every check; stdout must be exactly the environment line plus one JSON line per check."""
    results = tmp_path_factory.mktemp("gpu-results")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--results", str(results)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # any stray print would fail to parse
    assert "environment" in lines[0], proc.stderr[-5000:]
    records = {r["check"]: r for r in lines[1:]}
    assert len(records) == len(lines) - 1  # one line per check, none twice
    return records, results, proc


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_dry_run_exits_zero(dry_run):
    # Catches: a failed check hidden behind a zero exit (CI would then pass a broken suite), or the reverse.
    records, _, proc = dry_run
    failed = {name: r.get("reason") for name, r in records.items() if r["status"] == "failed"}
    assert proc.returncode == (1 if failed else 0), failed
    assert not failed, failed


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_every_check_reports_once_and_none_failed(dry_run):
    # Catches: a check missing from the entry point, or a crash reported as a result instead of a pass.
    from benchmarks.gpu.report import validate

    records, _, _ = dry_run
    assert set(records) == CHECKS
    for name, record in records.items():
        assert record["mode"] == "dry-run"
        assert record["status"] in ("passed", "skipped"), (name, record.get("reason"))
        assert validate(record) == [], name
    # skipped only while the trainer is missing, and then with exactly the agreed reason
    if (REPO / "chimed_trl" / "trainers" / "listwise_reward.py").exists():
        assert records["listwise_reward"]["status"] == "passed"
    else:
        assert records["listwise_reward"]["reason"] == "skipped: ListwiseRewardTrainer not available"


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_pretrain_dry_run_packs_isolates_and_counts(dry_run):
    # Catches: a packed batch whose documents see each other (cache on, or packing off), a wrong tiny shape,
    # a throughput computed from the wrong token count.
    records, _, _ = dry_run
    sdpa = records["pretrain_throughput"]["figures"]["backends"]["sdpa"]
    # tiny Qwen2 twin by hand: hidden 64, 2 layers, 4 heads / 1 kv head of 16, mlp 176, vocab 4096, tied
    h, kv, mlp, vocab = 64, 16, 176, 4096
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * mlp + 2 * h
    assert sdpa["params"] == vocab * h + 2 * layer + h
    assert sdpa["status"] == "passed" and math.isfinite(sdpa["loss_last"])
    assert 0 < sdpa["tokens_trained"] <= 2 * 256  # one step of batch 2 x max_length 256
    assert sdpa["tokens_per_s"] == pytest.approx(sdpa["tokens_trained"] / sdpa["step_s_median"], rel=1e-3)
    iso = sdpa["packed_vs_alone"]
    assert iso["documents"] >= 2 and iso["max_abs_diff"] <= 1e-4
    assert iso["cache_on_max_abs_diff"] > 1e-3  # the leaky forward differs, so the comparison can fail
    flash = records["pretrain_throughput"]["figures"]["backends"]["flash_attention_2"]
    if flash["status"] == "skipped":
        assert "64 MiB" in flash["reason"]


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_qlora_dry_run_follows_the_recipe(dry_run):
    # Catches: a benchmark that drifts from recipes/qlora/sft.yaml (rank, targets, quantisation, checkpointing).
    records, _, _ = dry_run
    record = records["qlora_memory"]
    recipe = yaml.safe_load((REPO / "recipes" / "qlora" / "sft.yaml").read_text())
    config = record["config"]
    assert config["lora_r"] == recipe["lora_r"] and config["lora_target_modules"] == recipe["lora_target_modules"]
    assert config["gradient_checkpointing"] is True and config["per_device_train_batch_size"] == 1
    assert config["recipe_quantization"]["quant_type"] == recipe["bnb_4bit_quant_type"] == "nf4"
    assert config["recipe_quantization"]["double_quant"] is recipe["use_bnb_nested_quant"] is True
    # LoRA parameters by hand on the tiny Llama twin (hidden 64, mlp 176, 2 layers, no GQA):
    # r x (in + out) for q, k, v, o (64 -> 64) and gate, up (64 -> 176), down (176 -> 64)
    r = recipe["lora_r"]
    assert record["figures"]["trainable_params"] == 2 * r * (4 * (64 + 64) + 3 * (64 + 176))
    assert record["figures"]["parts"]["4bit"]["status"] == "skipped"


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_zero3_dry_run_trains_through_the_recipe(dry_run):
    # Catches: a launch command the recipe rejects, or a run that exits 0 without training.
    records, _, _ = dry_run
    figures = records["zero3_sft"]["figures"]
    assert figures["steps"] == 1 and figures["world_size"] == 1
    # a random-init model predicts about uniformly: loss close to ln(vocab) of the tiny twin
    assert figures["loss_first"] == pytest.approx(math.log(4096), abs=0.3)


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_generation_dry_run_counts_samples(dry_run):
    # Catches: n ignored (one sample per prompt) or prompts dropped by batching.
    records, _, _ = dry_run
    figures = records["generation"]["figures"]
    assert figures["prompts"] == 8 and figures["samples"] == 8 * 2
    # the record keeps unrounded figures, so the relation is exact whatever the machine's speed (a record
    # rounded to 3 decimals of 0.018 s was 2% off and turned CI red)
    assert figures["samples_per_s"] == pytest.approx(16 / figures["seconds"], rel=1e-9)
    assert figures["parts"]["vllm"]["status"] == "skipped" and "336 MB" in figures["parts"]["vllm"]["reason"]


@pytest.mark.slow  # shares one CPU dry run of the whole suite (about 30 s of CPU time)
def test_results_files_are_labelled_dry_run(dry_run):
    # Catches: dry-run numbers written as if they were GPU figures.
    records, results, _ = dry_run
    text = (results / "RESULTS.md").read_text()
    assert "NOT GPU figures" in text
    for name in CHECKS:
        assert f"## {name}: " in text
    assert set(json.loads((results / "results.json").read_text())) == CHECKS


def test_published_shapes_have_the_model_cards_parameter_counts():
    # Catches: a mistyped published shape (a Qwen2-1.5B that is not 1.5B). Counts from the model cards.
    from benchmarks.gpu.shapes import SHAPES, build_model, count_params, model_config

    cards = {"qwen2-1.5b": 1_543_714_304, "qwen2-0.5b": 494_032_768, "llama2-13b": 13_015_864_320}
    for name, expected in cards.items():
        model = build_model(model_config(SHAPES[name]), "meta", torch.bfloat16)
        assert count_params(model) == expected, name


def test_validator_rejects_what_must_never_be_reported():
    # Catches: vLLM or flash-attn reported as passed on the GPU, skips without reasons, missing or empty figures.
    from benchmarks.gpu.report import validate

    good = {"check": "generation", "mode": "cuda", "status": "passed", "figures": {}}
    good["figures"] = {"samples_per_s": 10.0, "samples": 2048, "prompts": 256, "parts": {}}
    assert validate(good) == []
    leak = json.loads(json.dumps(good))
    leak["figures"]["parts"]["vllm"] = {"status": "passed"}
    assert any("vllm" in p for p in validate(leak))
    silent = json.loads(json.dumps(good))
    silent["figures"]["parts"]["vllm"] = {"status": "skipped"}
    assert any("without a reason" in p for p in validate(silent))
    empty = json.loads(json.dumps(good))
    empty["figures"]["samples_per_s"] = None
    assert any("None on a CUDA run" in p for p in validate(empty))
    del empty["figures"]["samples_per_s"]
    assert any("without figure" in p for p in validate(empty))


def _wheel(folder, name):
    """A minimal valid wheel of a one-module package, written by hand."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
    return path


def test_install_step_installs_carried_wheels_without_an_index(tmp_path, monkeypatch):
    # Catches: an install step that installs somewhere neither this process nor launched recipes look, that
    # does not notice an earlier install, or that fails silently when no wheels were carried.
    from benchmarks.gpu.install import ensure_packages
    from chimed_trl.errors import UserError

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # any index access would fail
    with pytest.raises(UserError, match="wheels.sh"):
        ensure_packages("chimed_probe_pkg", wheel_dir=tmp_path / "none", site=tmp_path / "site")
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "chimed_probe_pkg")
    assert ensure_packages("chimed_probe_pkg", wheel_dir=wheels, site=tmp_path / "site") == "installed"
    import chimed_probe_pkg

    assert chimed_probe_pkg.VALUE == 42
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "site")  # launched recipes see it
    assert ensure_packages("chimed_probe_pkg", wheel_dir=wheels, site=tmp_path / "site") == "present"
    sys.modules.pop("chimed_probe_pkg")
