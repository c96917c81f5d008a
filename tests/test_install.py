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


def _rerun(capsys, stage_module, argv):
    from chimed_trl.cli import run_recipe

    capsys.readouterr()
    try:
        run_recipe(stage_module.main, stage_module.ARGUMENT_TYPES, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.slow
def test_every_stage_leaves_its_finished_run_alone(installed_demo, capsys, monkeypatch):
    """catches: a stage that retrains, rescores or rewrites a finished run when rerun as-is (or resumes it under
    changed settings), and a refusal that is not one line naming the changed key. Each stage's own command from
    the demo is rerun in-process against its finished directory: as-is (exit 0, tree byte-identical), then with
    one training-relevant setting changed (exit 2, one line naming it, tree byte-identical)."""
    import importlib

    from chimed_trl.pipeline.config import load_pipeline
    from chimed_trl.pipeline.runner import stage_command

    work, proc = installed_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.chdir(work)
    pipe = load_pipeline(REPO / "recipes/tiny/pipeline.yaml", output_dir="demo")
    checked = []
    for stage in pipe.stages:
        if stage.module is None or stage.name == "eval_base":
            continue  # the tiny build is not a recipe; eval_base is eval_sft's stage on another model
        argv = stage_command(pipe, stage)
        argv = argv[argv.index("--config") :]
        module = importlib.import_module(stage.module)
        out = pipe.stage_dir(stage.name)
        before = _snapshot(out)
        code, err = _rerun(capsys, module, argv)
        assert code == 0 and _snapshot(out) == before, (stage.name, code, err)
        code, err = _rerun(capsys, module, [*argv, "--seed", "7"])
        assert code == 2 and len(err) == 1 and "seed" in err[0], (stage.name, err)
        assert _snapshot(out) == before, stage.name
        checked.append(stage.recipe)
    assert sorted(set(checked)) == sorted(
        ["pretrain", "sft", "augment_rewards", "reward", "rejection_sampling", "evaluate"]
    )
