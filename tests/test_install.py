"""A non-editable install works on its own: cards, sample data and the tiny pre-training step, from another cwd."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_every_stage_leaves_its_finished_run_alone(installed, installed_demo):
    """catches: a stage that retrains, rescores or rewrites a finished run when rerun as-is (or resumes it under
    changed settings), and a refusal that is not one line naming the changed key. Each stage's own command from
    the demo is rerun with the installed ``chimed-trl`` against its finished directory: as-is (exit 0, tree
    byte-identical), then with one training-relevant setting changed (exit 2, one line naming it, tree
    byte-identical)."""
    from chimed_trl.pipeline.config import load_pipeline
    from chimed_trl.pipeline.runner import stage_command

    target, env = installed
    work, proc = installed_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    pipe = load_pipeline(REPO / "recipes/tiny/pipeline.yaml", output_dir="demo")
    checked = []
    for stage in pipe.stages:
        if stage.module is None or stage.name in ("eval_base", "eval_sft"):
            continue  # the tiny build is not a recipe; eval_rs stands for the three evaluations
        argv = stage_command(pipe, stage)
        argv = argv[argv.index("--config") :]
        argv[1] = f"recipes/tiny/{Path(argv[1]).name}"  # the installed copy's, as a user of the install names it
        out = work / pipe.stage_dir(stage.name)
        before = _snapshot(out)
        for extra, expected in (([], 0), (["--seed", "7"], 2)):
            rerun = subprocess.run(
                [sys.executable, str(target / "bin" / "chimed-trl"), stage.recipe, *argv, *extra],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            errors = [line for line in rerun.stderr.splitlines() if line.startswith("error:")]
            assert rerun.returncode == expected, (stage.name, extra, rerun.stderr[-2000:])
            assert _snapshot(out) == before, (stage.name, extra)
            if expected:
                assert len(errors) == 1 and "seed" in errors[0], (stage.name, rerun.stderr[-2000:])
        checked.append(stage.recipe)
    assert sorted(set(checked)) == sorted(
        ["pretrain", "sft", "augment_rewards", "reward", "rejection_sampling", "evaluate"]
    )
