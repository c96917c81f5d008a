"""A non-editable install works on its own: cards, sample data and the tiny pre-training step, from another cwd."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in", "chimed_trl", "data_cards"]
SOURCES += ["recipes", "accelerate_configs"]  # shipped inside the package by setup.py

SCRIPT = r"""
import json, sys
from pathlib import Path
import chimed_trl
from chimed_trl.data.cards import load_card, cards_dir
from chimed_trl.evaluation.report import paper_reference

target = Path(sys.argv[1]).resolve()
package = Path(chimed_trl.__file__).resolve().parent
assert target in package.parents, package                    # the installed copy, not the repository
assert cards_dir() == package / "data_cards", cards_dir()
card = load_card("tiny_pretrain")
assert paper_reference()["choice_accuracy"]["CMMLU"]["scores"]["ChiMed-GPT"] == 52.92

from trl import SFTConfig
from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.stages import train_lm
from chimed_trl.tiny import build_tiny

model_dir = build_tiny(Path("model"), seed=0)
samples = package / "data" / "samples" / "pretrain.jsonl"
script = ChimedScriptArguments(stage="pretrain", datasets=[{"card": card.name, "path": str(samples)}])
training = SFTConfig(output_dir="out", max_length=128, packing=True, max_steps=1, per_device_train_batch_size=2,
                     bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no")
train_lm(script, training, ChimedModelConfig(model_name_or_path=str(model_dir)), expected_stage="pretrain")
print(json.dumps({"card": str(card.path), "metrics": Path("out/metrics.json").exists()}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed non-editable (``pip install --target``) from a copy of the sources: (site, env)."""
    tmp_path = tmp_path_factory.mktemp("install")
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*pip, "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("CHIMED_DATA_CARDS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return target, env


@pytest.mark.slow
def test_non_editable_install_runs_from_elsewhere(installed, tmp_path):
    """catches: the package finding data_cards/ (or recipes, samples) by walking up to the repository."""
    target, env = installed
    assert (target / "chimed_trl" / "data_cards" / "tiny_pretrain.md").exists()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"metrics": true' in proc.stdout and str(target) in proc.stdout


@pytest.fixture(scope="module")
def installed_demo(installed, tmp_path_factory):
    """``chimed-trl demo`` of the non-editable install, run once from an empty directory: (work dir, process)."""
    target, env = installed
    command = target / "bin" / "chimed-trl"
    assert command.exists(), sorted(p.name for p in (target / "bin").iterdir())
    work = tmp_path_factory.mktemp("empty")
    proc = subprocess.run(
        [sys.executable, str(command), "demo", "--output_dir", "demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return work, proc


@pytest.mark.slow
def test_installed_demo_runs_from_an_empty_directory_and_learns(installed_demo):
    """catches: the demo needing the repository (recipes/, samples, accelerate configs) in the working directory,
    the console command missing from the install, and a regime that runs but does not learn: pre-training and
    SFT losses fall, the reward model beats chance on held-out lists, rejection sampling raises mean reward."""
    work, proc = installed_demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in work.iterdir()) == ["demo"]  # nothing written beside the output dir
    data = json.loads((work / "demo" / "report.json").read_text())
    for section in data["training"]:
        if section["stage"] in ("pretrain", "sft"):
            assert section["loss_last"] < section["loss_first"], section["stage"]
    assert data["reward"]["pairwise_accuracy"] > 0.6
    rounds = data["rejection_sampling"]["rounds"]
    assert len(rounds) == 2 and rounds[-1]["mean_reward"] > rounds[0]["mean_reward"]
    assert [e["stage"] for e in data["evaluation"]] == ["eval_base", "eval_sft", "eval_rs"]


def _mean_loss(model_dir: Path, texts: list[str]) -> float:
    """Mean next-token loss with plain transformers: the independent check that a stage learned."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=256).input_ids
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_installed_demo_stages_are_wired_and_a_rerun_skips_them(installed, installed_demo):
    """catches: a stage trained on the wrong model (`from:` wiring), a stage that "finishes" without learning by an
    independent measure, a report whose curve is not the run's, and a rerun that retrains finished stages."""
    target, env = installed
    work, proc = installed_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "demo"
    samples = REPO / "chimed_trl/data/samples"
    docs = [json.loads(line)["text"] for line in (samples / "pretrain.jsonl").read_text().splitlines() if line.strip()]
    docs = [d for d in docs if d.strip()]  # the sample keeps an empty document on purpose (skipped and counted)
    assert _mean_loss(out / "pretrain", docs) < _mean_loss(out / "tiny", docs) - 0.5
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "sft")
    convs = [json.loads(line)["messages"] for line in (samples / "sft.jsonl").read_text().splitlines()]
    chats = [tok.apply_chat_template(c, tokenize=False) for c in convs]
    assert _mean_loss(out / "sft", chats) < _mean_loss(out / "pretrain", chats)
    for stage, source in (("pretrain", "tiny"), ("sft", "pretrain"), ("reward", "sft"), ("rs", "sft")):
        resolved = yaml.safe_load((out / stage / "resolved_config.yaml").read_text())
        assert Path(resolved["model"]["model_name_or_path"]).name == source, stage

    data = json.loads((out / "report.json").read_text())
    pre = json.loads((out / "pretrain/metrics.json").read_text())
    assert data["training"][0]["loss_curve"][0][1] == pytest.approx(pre["loss_first"])
    assert "![pretrain loss](loss_pretrain.png)" in (out / "report.md").read_text() and (out / "loss_sft.png").exists()
    stages = ["tiny", "pretrain", "sft", "augment", "reward", "rs", "eval_base", "eval_sft", "eval_rs"]
    assert [w["stage"] for w in data["wall_time"]] == stages

    weights = (out / "sft/model.safetensors").stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, str(target / "bin" / "chimed-trl"), "demo", "--output_dir", "demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == len(stages) and "-m chimed_trl.stages." not in again.stdout
    assert (out / "sft/model.safetensors").stat().st_mtime_ns == weights


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RERUNS = r"""
import contextlib, io, json, sys
from pathlib import Path
from chimed_trl.cli import main

def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes().hex() for p in sorted(root.rglob("*")) if p.is_file()}

results = []
for out, argv in json.loads(sys.argv[1]):
    before, err = snapshot(Path(out)), io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    results.append({"argv": argv, "code": code, "err": err.getvalue(), "same": snapshot(Path(out)) == before})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_stage_leaves_its_finished_run_alone(installed, installed_demo):
    """catches: a stage that retrains, rescores or rewrites a finished run when rerun as-is (or resumes it under
    changed settings), and a refusal that is not one line naming the changed key. Each stage's own command from
    the demo is rerun through the installed package's ``chimed-trl`` entry against its finished directory: as-is
    (exit 0, tree byte-identical), then with one training-relevant setting changed (exit 2, one line naming it,
    tree byte-identical). One process runs the twelve commands in turn (one import instead of twelve)."""
    from chimed_trl.pipeline.config import load_pipeline
    from chimed_trl.pipeline.runner import stage_command

    target, env = installed
    work, proc = installed_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    pipe = load_pipeline(REPO / "recipes/tiny/pipeline.yaml", output_dir="demo")
    commands, recipes = [], set()
    for stage in pipe.stages:
        if stage.module is None or stage.name in ("eval_base", "eval_sft"):
            continue  # the tiny build is not a recipe; eval_rs stands for the three evaluations
        argv = stage_command(pipe, stage)
        argv = argv[argv.index("--config") :]
        argv[1] = f"recipes/tiny/{Path(argv[1]).name}"  # the installed copy's, as a user of the install names it
        out = str(pipe.stage_dir(stage.name))
        commands += [(out, [stage.recipe, *argv]), (out, [stage.recipe, *argv, "--seed", "7"])]
        recipes.add(stage.recipe)
    assert recipes == {"pretrain", "sft", "augment_rewards", "reward", "rejection_sampling", "evaluate"}
    reruns = subprocess.run(
        [sys.executable, "-c", RERUNS, json.dumps(commands)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reruns.returncode == 0, reruns.stderr[-3000:]
    results = json.loads(reruns.stdout.strip().splitlines()[-1])
    for as_is, changed in zip(results[::2], results[1::2]):
        assert as_is["code"] == 0 and as_is["same"], as_is
        errors = [line for line in changed["err"].splitlines() if line.startswith("error:")]
        assert changed["code"] == 2 and changed["same"], changed
        assert len(errors) == 1 and "seed" in errors[0], changed
