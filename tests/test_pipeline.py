"""The pipeline runner (chimed_trl.pipeline), its report and the demo wrapper.

Most tests drive the real runner (real subprocesses, real files) with a small probe recipe written into a
temporary checkout: it follows the recipe contract (``--config``/``--output_dir``/``--model_name_or_path``,
``metrics.json`` written last) and records each call, so skipping, ``--from`` and model resolution are
checked by counting real invocations. The slow test runs ``recipes/tiny/pipeline_core.yaml`` end to end.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chimed_trl import pipeline

from .conftest import REPO

PROBE = r"""
import json, os, pathlib, sys
args = sys.argv[1:]
flags = dict(zip(args[::2], args[1::2]))
out = pathlib.Path(flags["--output_dir"])
out.mkdir(parents=True, exist_ok=True)
with open(os.environ["PROBE_CALLS"], "a") as f:
    f.write(json.dumps({"script": sys.argv[0], "argv": args}) + "\n")
print("probe says hello from", out)
if "--fail" in flags:
    sys.exit(int(flags["--fail"]))
(out / "model.txt").write_text("weights of " + out.name)
(out / "metrics.json").write_text(json.dumps({"loss_first": 2.0, "loss_last": 1.0}))
"""


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A temporary working directory with recipes/probe.py, a config, and a call log."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "probe.py").write_text(PROBE)
    (tmp_path / "cfg.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROBE_CALLS", str(tmp_path / "calls.jsonl"))
    return tmp_path


def calls(checkout) -> list[dict]:
    path = checkout / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def called_stages(checkout) -> list[str]:
    return [Path(dict(zip(c["argv"][::2], c["argv"][1::2]))["--output_dir"]).name for c in calls(checkout)]


def write_pipeline(checkout, stages, **top) -> Path:
    path = checkout / "pipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "out", "stages": stages, **top}))
    return path


THREE = [
    {"name": "a", "recipe": "probe", "config": "cfg.yaml"},
    {"name": "b", "recipe": "probe", "config": "cfg.yaml", "from": "a", "args": {"extra": "{a}/model.txt"}},
    {"name": "c", "recipe": "probe", "config": "cfg.yaml", "from": "b", "args": {"flag": True, "n": 3}},
]


# ---------------------------------------------------------------- commands


def test_dry_run_prints_the_full_regime_commands(capsys, tmp_path):
    # Bugs caught: a placeholder not expanded (or expanded to the wrong stage), `from:` mapped to the wrong
    # folder, a JSON argument not quoted for the shell, a stage missing or out of order. The expected
    # lines are written by hand from the recipes' planned CLIs, not produced by the runner.
    out = tmp_path / "demo"
    assert (
        pipeline.main(["--config", str(REPO / "recipes/tiny/pipeline.yaml"), "--output_dir", str(out), "--dry-run"])
        == 0
    )
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    o = str(out)
    responders = [
        {"name": "gpt-4 stand-in", "model": f"{o}/sft"},
        {"name": "gpt-3.5 stand-in", "model": f"{o}/pretrain"},
    ]
    expected = [
        ["python", "-m", "chimed_trl.tiny", f"{o}/tiny", "--seed", "0"],
        ["python", "recipes/pretrain.py", "--config", "recipes/tiny/pretrain.yaml", "--output_dir", f"{o}/pretrain",
         "--model_name_or_path", f"{o}/tiny", "--build_tiny_model", "false"],
        ["python", "recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--output_dir", f"{o}/sft",
         "--model_name_or_path", f"{o}/pretrain", "--build_tiny_model", "false"],
        ["python", "recipes/augment_rewards.py", "--config", "recipes/tiny/augment.yaml", "--output_dir",
         f"{o}/augment", "--responders", responders],
        ["python", "recipes/reward.py", "--config", "recipes/tiny/reward.yaml", "--output_dir", f"{o}/reward",
         "--model_name_or_path", f"{o}/sft", "--datasets", [{"formatter": "ranked", "path": f"{o}/augment/ranked.jsonl"}]],
        ["python", "recipes/rejection_sampling.py", "--config", "recipes/tiny/rejection_sampling.yaml", "--output_dir",
         f"{o}/rs", "--model_name_or_path", f"{o}/sft", "--reward_model_path", f"{o}/reward", "--num_rounds", "2"],
    ] + [
        ["python", "recipes/evaluate.py", "--config", "recipes/tiny/evaluate.yaml", "--output_dir", f"{o}/eval_{who}",
         "--model_name_or_path", f"{o}/{src}", "--build_tiny_model", "false"]
        for who, src in (("base", "tiny"), ("sft", "sft"), ("rs", "rs"))
    ]  # fmt: skip
    assert len(printed) == len(expected)
    for line, want in zip(printed, expected):
        got = shlex.split(line)  # the shell sees exactly these words
        got = [json.loads(w) if w.startswith(("[", "{")) else w for w in got]
        assert got == want
    assert not out.exists()  # a dry run writes nothing


def test_demo_is_the_pipeline_on_the_tiny_config(tmp_path):
    # Bug caught: demo.py keeping its own stage loop or a different config than `make demo` documents.
    proc = subprocess.run(
        [sys.executable, "-m", "chimed_trl.demo", "--dry-run", "--output_dir", str(tmp_path / "d")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    scripts = [shlex.split(c)[1] for c in commands]
    assert scripts == ["-m"] + [f"recipes/{r}.py" for r in
                                ("pretrain", "sft", "augment_rewards", "reward", "rejection_sampling")] + ["recipes/evaluate.py"] * 3  # fmt: skip
    assert "for stage in" not in (REPO / "chimed_trl/demo.py").read_text()


def test_accelerate_stage_command_and_executable():
    # Bug caught: accelerate flags after the script (they would go to the recipe), or `accelerate` run from
    # PATH instead of this interpreter's package.
    pipe = pipeline.Pipeline(Path("p.yaml"), Path("out"), [])
    stage = pipeline.Stage("sft", "sft", "c.yaml", accelerate_config="accelerate_configs/cpu_2proc.yaml",
                           num_processes=2, args={"ddp_backend": "gloo"})  # fmt: skip
    cmd = pipeline.stage_command(pipe, stage)
    assert cmd == ["accelerate", "launch", "--config_file", "accelerate_configs/cpu_2proc.yaml", "--num_processes",
                   "2", "recipes/sft.py", "--config", "c.yaml", "--output_dir", "out/sft", "--ddp_backend", "gloo"]  # fmt: skip
    assert pipeline.executable(cmd)[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert pipeline.executable(cmd)[3:] == cmd[2:]


# ---------------------------------------------------------------- running, skipping, --from


def test_run_skip_and_model_resolution(checkout, capsys):
    # Bugs caught: `from:` not passed as --model_name_or_path (or pointing at the wrong stage), "{a}" left
    # unexpanded, a finished stage (metrics.json present) run again, an unfinished one skipped.
    path = write_pipeline(checkout, THREE)
    assert pipeline.main(["--config", str(path)]) == 0
    assert called_stages(checkout) == ["a", "b", "c"]
    argv = {Path(c["argv"][c["argv"].index("--output_dir") + 1]).name: c["argv"] for c in calls(checkout)}
    assert "--model_name_or_path" not in argv["a"]
    assert argv["b"][argv["b"].index("--model_name_or_path") + 1] == "out/a"
    assert argv["b"][argv["b"].index("--extra") + 1] == "out/a/model.txt"
    assert argv["c"][argv["c"].index("--model_name_or_path") + 1] == "out/b"
    assert argv["c"][-4:] == ["--flag", "true", "--n", "3"]
    assert "probe says hello" in (checkout / "out/b/stage.log").read_text()  # the stage's own output is logged

    # second run: everything finished -> nothing runs
    assert pipeline.main(["--config", str(path)]) == 0
    assert called_stages(checkout) == ["a", "b", "c"]
    assert capsys.readouterr().out.count("skipped") == 3

    # a stage without metrics.json (stopped half-way) runs again, alone
    (checkout / "out/b/metrics.json").unlink()
    assert pipeline.main(["--config", str(path)]) == 0
    assert called_stages(checkout) == ["a", "b", "c", "b"]


def test_from_reruns_and_moves_old_outputs_aside(checkout):
    # Bugs caught: --from rerunning earlier stages, not rerunning later ones, or deleting the previous
    # outputs (a user's note inside a stage folder must survive, moved to .previous/).
    path = write_pipeline(checkout, THREE)
    assert pipeline.main(["--config", str(path)]) == 0
    (checkout / "out/b/my_notes.txt").write_text("keep me")
    assert pipeline.main(["--config", str(path), "--from", "b"]) == 0
    assert called_stages(checkout) == ["a", "b", "c", "b", "c"]
    previous = list((checkout / "out/.previous").iterdir())
    assert len(previous) == 1
    assert (previous[0] / "b/my_notes.txt").read_text() == "keep me"
    assert (previous[0] / "c/model.txt").read_text() == "weights of c"
    assert not (checkout / "out/b/my_notes.txt").exists()
    assert (checkout / "out/a/model.txt").exists() and not (previous[0] / "a").exists()


def test_from_needs_finished_earlier_stages(checkout, capsys):
    # Bug caught: --from c starting c on a model stage b never produced.
    path = write_pipeline(checkout, THREE)
    assert pipeline.main(["--config", str(path), "--from", "c"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --from c: earlier stage 'a' has not finished; run without --from"
    assert calls(checkout) == []


def test_failing_stage_stops_with_one_line(checkout, capsys):
    # Bugs caught: a failed stage reported as done, later stages run on a missing model, no pointer to the log.
    stages = [THREE[0], {**THREE[1], "args": {"fail": 3}}, THREE[2]]
    path = write_pipeline(checkout, stages)
    assert pipeline.main(["--config", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: stage 'b' failed (exit code 3); log: out/b/stage.log"
    assert any("probe says hello" in line for line in err[:-1])  # the log's tail is shown above it
    assert called_stages(checkout) == ["a", "b"]
    state = json.loads((checkout / "out/pipeline_state.json").read_text())
    assert state["stages"]["b"]["status"] == "failed" and state["stages"]["b"]["exit_code"] == 3


def test_refuses_a_user_directory(checkout, capsys):
    # Bug caught: the runner writing stage folders into a directory it did not create.
    (checkout / "out").mkdir()
    (checkout / "out/thesis.tex").write_text("precious")
    path = write_pipeline(checkout, THREE)
    assert pipeline.main(["--config", str(path)]) == 2
    assert "was not created by the pipeline" in capsys.readouterr().err
    assert sorted(p.name for p in (checkout / "out").iterdir()) == ["thesis.tex"] and calls(checkout) == []


BAD = {
    "not yaml": ("stages: [a, b\n", r"line 2: not valid YAML"),
    "unknown top key": ("output_dir: o\nstage: []\n", r"top level: unknown key\(s\) \['stage'\]"),
    "no stages": ("output_dir: o\nstages: []\n", r"stages: required"),
    "unknown stage key": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c, modle: x}\n",
        r"stages\[0\] \(a\): unknown key\(s\) \['modle'\]",
    ),
    "from a later stage": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c, from: b}\n- {name: b, recipe: probe, config: c}\n",
        r"stages\[0\] \(a\): from: 'b' is not an earlier stage",
    ),
    "duplicate": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c}\n- {name: a, recipe: probe, config: c}\n",
        r"stages\[1\] \(a\): duplicate stage name 'a'",
    ),
    "unknown placeholder": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c, args: {x: '{rm}/f'}}\n",
        r"stages\[0\] \(a\): args refer to \['\{rm\}'\]",
    ),
    "missing config": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe}\n",
        r"stages\[0\] \(a\): 'config' is required",
    ),
    "runner-owned flag": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c, args: {output_dir: x}}\n",
        r"args must not set \['output_dir'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yaml_is_one_line(checkout, capsys, case):
    # Bug caught: a traceback (or a late failure after stages ran) for a mistake in the pipeline YAML.
    text, pattern = BAD[case]
    (checkout / "bad.yaml").write_text(text)
    assert pipeline.main(["--config", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: bad.yaml: "), err
    assert re.search(pattern, err), err
    assert calls(checkout) == [] and not (checkout / "o").exists()


def test_missing_recipe_fails_before_any_stage(checkout, capsys):
    # Bug caught: running stages 1..k and only then discovering that stage k+1's recipe does not exist.
    path = write_pipeline(checkout, [THREE[0], {"name": "rm", "recipe": "reward", "config": "cfg.yaml", "from": "a"}])
    assert pipeline.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: stage rm: recipe recipes/reward.py not found"
    assert calls(checkout) == []


def test_cli_error_exit_code(checkout):
    # Bug caught: the module entry point swallowing the exit status (make demo must fail on a bad config).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "chimed_trl.pipeline", "--config", "nope.yaml"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == "error: nope.yaml: pipeline config not found"
