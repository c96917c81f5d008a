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

from ..conftest import REPO

PROBE = r"""
import json, os, pathlib, sys
args = sys.argv[1:]
flags = dict(zip(args[::2], args[1::2]))
out = pathlib.Path(flags["--output_dir"])
out.mkdir(parents=True, exist_ok=True)
with open(os.environ["PROBE_CALLS"], "a") as f:
    f.write(json.dumps({"script": sys.argv[0], "argv": args, "rank": os.environ.get("RANK")}) + "\n")
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
    path.write_text(yaml.safe_dump({"output_dir": "out", "stages": stages, **top}, sort_keys=False))
    return path


THREE = [
    {"name": "a", "recipe": "probe", "config": "cfg.yaml"},
    {"name": "b", "recipe": "probe", "config": "cfg.yaml", "from": "a", "args": {"extra": "{a}/model.txt"}},
    {
        "name": "c",
        "recipe": "probe",
        "config": "cfg.yaml",
        "from": "b",
        "args": {"tasks": ["x", "y"], "flag": True, "n": 3},
    },
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
    expected = [
        ["python", "-m", "chimed_trl.tiny", f"{o}/tiny", "--seed", "0"],
        ["python", "-m", "chimed_trl.stages.pretrain", "--config", "recipes/tiny/pretrain.yaml", "--output_dir", f"{o}/pretrain",
         "--model_name_or_path", f"{o}/tiny", "--build_tiny_model", "false"],
        ["python", "-m", "chimed_trl.stages.sft", "--config", "recipes/tiny/sft.yaml", "--output_dir", f"{o}/sft",
         "--model_name_or_path", f"{o}/pretrain", "--build_tiny_model", "false"],
        ["python", "-m", "chimed_trl.stages.augment", "--config", "recipes/tiny/augment.yaml", "--output_dir",
         f"{o}/augment", "--responder_model", f"strong={o}/sft", f"weak={o}/pretrain"],
        ["python", "-m", "chimed_trl.stages.reward", "--config", "recipes/tiny/reward.yaml", "--output_dir", f"{o}/reward",
         "--model_name_or_path", f"{o}/sft", "--datasets", [{"formatter": "ranked", "path": f"{o}/augment/ranked.jsonl"}]],
        ["python", "-m", "chimed_trl.stages.rejection_sampling", "--config", "recipes/tiny/rejection_sampling.yaml", "--output_dir",
         f"{o}/rs", "--model_name_or_path", f"{o}/sft", "--reward_model_path", f"{o}/reward", "--num_rounds", "2"],
    ] + [
        ["python", "-m", "chimed_trl.stages.evaluate", "--config", "recipes/tiny/evaluate.yaml", "--output_dir", f"{o}/eval_{who}",
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
    modules = [shlex.split(c)[2] for c in commands]
    assert modules == ["chimed_trl.tiny"] + [f"chimed_trl.stages.{r}" for r in
                                             ("pretrain", "sft", "augment", "reward", "rejection_sampling")] + ["chimed_trl.stages.evaluate"] * 3  # fmt: skip
    assert "for stage in" not in (REPO / "chimed_trl/demo.py").read_text()


def test_accelerate_stage_command_and_executable():
    # Bug caught: accelerate flags after the script (they would go to the recipe), or `accelerate` run from
    # PATH instead of this interpreter's package.
    pipe = pipeline.Pipeline(Path("p.yaml"), Path("out"), [])
    stage = pipeline.Stage("sft", "sft", "c.yaml", accelerate_config="accelerate_configs/cpu_2proc.yaml",
                           num_processes=2, args={"ddp_backend": "gloo"})  # fmt: skip
    cmd = pipeline.stage_command(pipe, stage)
    assert cmd == ["accelerate", "launch", "--config_file", "accelerate_configs/cpu_2proc.yaml", "--num_processes",
                   "2", "-m", "chimed_trl.stages.sft", "--config", "c.yaml", "--output_dir", "out/sft", "--ddp_backend",
                   "gloo"]  # fmt: skip
    assert pipeline.executable(cmd)[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert pipeline.executable(cmd)[3:] == cmd[2:]


# ---------------------------------------------------------------- running, skipping, --from


def test_accelerate_stage_really_launches_two_processes(checkout):
    # Bug caught: the accelerate form printed but not what runs (flags after the script, the wrong module),
    # so a multi-process stage silently runs once. The launch is real: torchrun starts 2 ranks.
    import socket

    from ..conftest import PORT_TAKEN

    config = yaml.safe_load((REPO / "accelerate_configs/cpu_2proc.yaml").read_text())
    path = write_pipeline(
        checkout, [{"name": "a", "recipe": "probe", "config": "cfg.yaml", "accelerate_config": "acc.yaml"}]
    )
    for _ in range(3):  # a port found free here can be taken before torchrun binds it: retry on a new one
        with socket.socket() as sock:  # a free port: other test runs may hold the config's fixed one
            sock.bind(("127.0.0.1", 0))
            config["main_process_port"] = sock.getsockname()[1]
        (checkout / "acc.yaml").write_text(yaml.safe_dump(config))
        (checkout / "calls.jsonl").unlink(missing_ok=True)
        rc = pipeline.main(["--config", str(path)])
        log = checkout / "out" / "logs" / "a.log"
        if rc == 0 or not any(m in log.read_text(errors="replace") for m in PORT_TAKEN):
            break
    assert rc == 0
    assert sorted(c["rank"] for c in calls(checkout)) == ["0", "1"]


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
    assert argv["c"][-7:] == ["--tasks", "x", "y", "--flag", "true", "--n", "3"]  # nargs lists as separate words
    assert "probe says hello" in (checkout / "out/logs/b.log").read_text()  # the stage's own output is logged

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
    assert err[-1] == "error: stage 'b' failed (exit code 3); log: out/logs/b.log"
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
    "not yaml": ("stages: [a, b\n", r"^error: bad.yaml:2:1: invalid YAML: expected ',' or ']'"),
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
    ),  # a secret in args would be printed, logged and saved in pipeline_state.json
    "tiny seed not an integer": (  # was a ValueError traceback from int('abc')
        "output_dir: o\ntiny: {seed: abc}\nstages:\n- {name: a, recipe: probe, config: c}\n",
        r"tiny: expected \{seed: INT\}",
    ),
    "secret in args": (
        "output_dir: o\nstages:\n- {name: a, recipe: probe, config: c, args: {hub_token: hf_x}}\n",
        r"args must not carry secrets \(\['hub_token'\]\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yaml_is_one_line(checkout, capsys, case):
    # Bug caught: a traceback (or a late failure after stages ran) for a mistake in the pipeline YAML.
    text, pattern = BAD[case]
    (checkout / "bad.yaml").write_text(text)
    assert pipeline.main(["--config", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: bad.yaml:"), err
    assert re.search(pattern, err), err
    assert calls(checkout) == [] and not (checkout / "o").exists()


def test_missing_recipe_fails_before_any_stage(checkout, capsys):
    # Bug caught: running stages 1..k and only then discovering that stage k+1's recipe (a script of the user's own:
    # not one of the package's stages) does not exist.
    path = write_pipeline(
        checkout, [THREE[0], {"name": "rm", "recipe": "my_reward", "config": "cfg.yaml", "from": "a"}]
    )
    assert pipeline.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: stage rm: recipe recipes/my_reward.py not found"
    assert calls(checkout) == []


def test_package_stages_run_from_any_working_directory(tmp_path, monkeypatch):
    # Bug caught: the runner running `recipes/<recipe>.py` relative to the working directory, so an installed
    # package (or a run started outside the checkout) cannot run its own pipeline: a package stage needs no file.
    monkeypatch.chdir(tmp_path)  # no recipes/ here
    (tmp_path / "c.yaml").write_text("{}\n")
    stages = [{"name": n, "recipe": r, "config": "c.yaml"} for n, r in (("s", "sft"), ("a", "augment_rewards"))]
    pipe = pipeline.load_pipeline(write_pipeline(tmp_path, stages))
    assert pipeline.check_files(pipe) == []
    assert [pipeline.stage_command(pipe, s)[1:3] for s in pipe.stages] == [
        ["-m", "chimed_trl.stages.sft"],
        ["-m", "chimed_trl.stages.augment"],
    ]


def test_cli_error_exit_code(checkout):
    # Bug caught: the module entry point swallowing the exit status (make demo must fail on a bad config).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "chimed_trl.pipeline", "--config", "nope.yaml"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == "error: nope.yaml: pipeline config not found"


# ---------------------------------------------------------------- report


def _stage_files(out: Path) -> None:
    """Outputs as the stages write them: metrics.json, a checkpoint's trainer_state, RS stats, eval reports."""
    pre = out / "pretrain"
    (pre / "checkpoint-3").mkdir(parents=True)
    (pre / "metrics.json").write_text(
        json.dumps({"stage": "pretrain", "steps": 3, "loss_first": 7.5, "loss_last": 5.25})
    )
    history = [{"loss": 7.5, "step": 1}, {"loss": 6.0, "step": 2}, {"loss": 5.25, "step": 3}, {"train_runtime": 1.0}]
    (pre / "checkpoint-3/trainer_state.json").write_text(json.dumps({"log_history": history}))
    rm = out / "reward"
    rm.mkdir()
    # the keys the reward stage writes: training-set figures under train, held-out ones under eval (shown)
    rm_metrics = {"train": {"pairwise_accuracy": 0.99, "reward_rank_0": 9.0},
                  "eval": {"pairwise_accuracy": 0.75, "reward_rank_0": 1.5, "reward_rank_1": 0.5,
                           "reward_rank_2": -0.25, "reward_source_human": 3.0}}  # fmt: skip
    (rm / "metrics.json").write_text(json.dumps(rm_metrics))
    for r, (mean, kept) in enumerate([(0.1, 0.4), (0.3, 0.6)]):
        (out / f"rs/round_{r}").mkdir(parents=True)
        stats = {"reward_mean": mean, "reward_min": -1, "reward_max": 1, "kept_reward_mean": kept}  # round_stats' keys
        (out / f"rs/round_{r}/stats.json").write_text(json.dumps(stats))
    for name, acc, f1 in (("eval_base", 0.25, 0.0), ("eval_sft", 0.5, 0.125)):
        (out / name).mkdir()
        report = {"settings": {"model": f"runs/{name}"},
                  "tasks": {"choice": {"micro_accuracy": acc}, "ner": {"mention_type": {"f1": f1}},
                            "dialogue": {"scores": {"BLEU-1": 12.5}}}}  # fmt: skip
        if name == "eval_sft":
            report["paper"] = {"this_run": {"CMMLU": {"micro": 50.0, "macro": 40.0, "denominator": 8}}}
        (out / name / "report.json").write_text(json.dumps(report))


def test_report_sections_from_stage_outputs(tmp_path):
    # Bugs caught: the loss curve read from the wrong file (or losing the step order), the reward model's
    # train accuracy shown as held-out, reward-by-rank positions shuffled, RS rounds mixed with kept-only
    # figures, evaluation columns misaligned between policies, a missing stage raising instead of being
    # left out. Expected values are the hand-written inputs above.
    from chimed_trl.reporting.pipeline import write_report

    out = tmp_path / "run"
    _stage_files(out)
    stages = [pipeline.Stage("pretrain", "pretrain", "c"), pipeline.Stage("augment", "augment_rewards", "c"),
              pipeline.Stage("reward", "reward", "c"), pipeline.Stage("rs", "rejection_sampling", "c"),
              pipeline.Stage("eval_base", "evaluate", "c"), pipeline.Stage("eval_sft", "evaluate", "c")]  # fmt: skip
    state = {"stages": {"pretrain": {"wall_time_s": 12.5}, "reward": {"wall_time_s": 3.0}}}
    md = write_report(pipeline.Pipeline(Path("p.yaml"), out, stages), state).read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["training"][0]["loss_curve"] == [[1, 7.5], [2, 6.0], [3, 5.25]]
    assert "| pretrain | 3 | 7.50 | 5.25 |" in md
    assert data["reward"]["pairwise_accuracy"] == 0.75 and "**75.0%**" in md
    assert data["reward"]["reward_by_rank"] == [1.5, 0.5, -0.25]
    assert [(r["round"], r["mean_reward"], r["mean_reward_kept"]) for r in data["rejection_sampling"]["rounds"]] == [
        (0, 0.1, 0.4),
        (1, 0.3, 0.6),
    ]
    assert "| policy | choice accuracy | NER F1 | BLEU-1 |" in md
    assert "| eval_base (`runs/eval_base`) | 25.00 | 0.00 | 12.50 |" in md
    assert "| eval_sft (`runs/eval_sft`) | 50.00 | 12.50 | 12.50 |" in md
    # the published rows come from the package's copy of the paper's tables (ChiMed-GPT: C-Eval 68.29 = 28/41),
    # this pipeline's policy sits in the CMMLU column its evaluation was placed in, with its denominator
    assert "| ChiMed-GPT | 68.29 |" in md
    assert "| eval_sft (this pipeline) | — | 50.00 (n=8) | — |" in md
    assert "| pretrain | 12.50 |" in md and "Total: 15.5 s" in md
    for png in ("loss_pretrain.png", "reward_by_rank.png", "rs_reward_by_round.png"):
        assert f"]({png})" in md and (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "augment" not in md  # a stage with no outputs has no section and no error


def test_report_without_optional_stages(tmp_path):
    # Bug caught: the report failing (KeyError) when only the core stages ran.
    from chimed_trl.reporting.pipeline import write_report

    out = tmp_path / "run"
    out.mkdir()
    md = write_report(
        pipeline.Pipeline(Path("p.yaml"), out, [pipeline.Stage("rs", "rejection_sampling", "c")]), {}
    ).read_text()
    assert "Reward model" not in md and "Rejection sampling" not in md and "Evaluation" not in md


# ---------------------------------------------------------------- end to end on the tiny model


# The whole regime end to end (losses fall, the stages are wired by `from:`, the report, a rerun skips every
# finished stage) is tested on the installed demo: tests/test_install.py.


# ---------------------------------------------------------------- the READMEs


READMES = ("README.md", "recipes/chimed-gpt/README.md", "recipes/lora/README.md")
CONFIG_PATH = re.compile(r"(?:recipes|accelerate_configs)/[\w./-]+\.yaml")
LANDING = {"augment": "augment_rewards", "reward": "reward", "rejection_sampling": "rejection_sampling"}
# the reward-model ablation's configs, longest prefix first: its reward arms, its report, its pipelines
LANDING = {"ablation_reward": "reward", "ablation_report": "ablation_report", "ablation": "pipeline", **LANDING}


def named_configs() -> list[str]:
    found = set()
    for readme in READMES:
        found |= set(CONFIG_PATH.findall((REPO / readme).read_text(encoding="utf-8")))
    return sorted(found)


def _recipe_of(config: str) -> str:
    stem = Path(config).stem
    for prefix, recipe in LANDING.items():
        if stem.startswith(prefix):
            return recipe
    return next(r for r in ("pipeline", "pretrain", "sft", "evaluate") if stem.startswith(r))


def test_readmes_name_configs():
    # Bug caught: the regex finding nothing (the parsing test below would then pass vacuously).
    names = named_configs()
    assert {"recipes/chimed-gpt/pipeline.yaml", "recipes/chimed-gpt/evaluate.yaml",
            "accelerate_configs/deepspeed_zero3.yaml", "recipes/qlora/sft.yaml"} <= set(names)  # fmt: skip
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (REPO / "README.md").read_text(encoding="utf-8")):
        assert (REPO / image).read_bytes()[:4] == b"\x89PNG", image  # the demo picture is in the repository


@pytest.mark.parametrize("config", named_configs())
def test_every_config_the_readmes_name_parses(config, tmp_path):
    # Bugs caught: a README naming a config that does not exist, or one whose keys its recipe's dataclasses
    # reject (a typo, a renamed field), or a pipeline that does not load. Configs of recipes that have not
    # landed yet skip until their script exists, then must exist themselves.
    path = REPO / config
    if config.startswith("accelerate_configs/"):
        assert yaml.safe_load(path.read_text())["distributed_type"]
        return
    recipe = _recipe_of(config)
    assert path.exists(), f"{config} is named in a README but does not exist"
    if recipe == "pipeline":
        pipe = pipeline.load_pipeline(path)
        assert pipe.stages
        return
    import runpy

    from chimed_trl.cli import parse_recipe_args

    types = runpy.run_path(str(REPO / f"recipes/{recipe}.py"), run_name="recipe")["ARGUMENT_TYPES"]
    argv = ["--config", str(path), "--output_dir", str(tmp_path)]
    if any("bf16" in getattr(t, "__dataclass_fields__", {}) for t in types):
        argv += ["--bf16", "false", "--use_cpu", "true"]  # the GPU configs set bf16; only that is overridden here
    parsed = parse_recipe_args(types, argv)  # the recipe's own parser: unknown or mistyped keys are errors
    assert len(parsed) == len(types)
    if recipe in ("pretrain", "sft"):
        assert parsed[0].stage == recipe and parsed[0].datasets


def _library_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- example:library -->", 1)[1].split("<!-- /example:library -->", 1)[0]
    return block.split("```python", 1)[1].rsplit("```", 1)[0]


@pytest.mark.slow
def test_readme_library_example_runs(tmp_path, monkeypatch):
    # Bug caught: the README's Python example drifting from the real API (names, arguments).
    from chimed_trl import ListwiseRewardTrainer, RejectionSamplingTrainer  # noqa: F401  (a missing export fails)

    code = _library_example().replace("runs/example", str(tmp_path / "example"))
    monkeypatch.chdir(REPO)  # the example reads the bundled sample by its repository path
    namespace: dict = {}
    exec(compile(code, "README.md:library-example", "exec"), namespace)
    assert (tmp_path / "example/rm").is_dir() and (tmp_path / "example/rs").is_dir()


SLEEPER = r"""
import os, pathlib, subprocess, sys, time
args = sys.argv[1:]
flags = dict(zip(args[::2], args[1::2]))
pathlib.Path(flags["--output_dir"]).mkdir(parents=True, exist_ok=True)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # like accelerate's workers
pathlib.Path(os.environ["SLEEPER_PIDS"]).write_text(f"{os.getpid()} {worker.pid}\n")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # a zombie is dead
    except (ProcessLookupError, OSError):
        return False


# Bugs caught: SIGKILL on the pipeline left the running stage (and its workers) alive as orphans, and an
# immediate rerun started a second run into the same folder while the first still ran.
def test_a_killed_pipeline_takes_its_stage_along_and_one_pipeline_runs_per_folder(checkout, capsys):
    import signal
    import time

    from chimed_trl.runs import RunLock

    (checkout / "recipes" / "sleeper.py").write_text(SLEEPER)
    path = write_pipeline(checkout, [{"name": "s", "recipe": "sleeper", "config": "cfg.yaml"}])
    pids = checkout / "pids"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLEEPER_PIDS": str(pids)}
    first = subprocess.Popen([sys.executable, "-m", "chimed_trl.pipeline", "--config", str(path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        stage, worker = map(int, pids.read_text().split())
        assert _alive(stage) and _alive(worker)
        capsys.readouterr()
        assert pipeline.main(["--config", str(path)]) == 2  # the second pipeline is refused, nothing started
        err = capsys.readouterr().err
        assert f"in use by another run (pid {first.pid}" in err and len(err.strip().splitlines()) == 1
        first.send_signal(signal.SIGKILL)
        first.wait()
        deadline = time.monotonic() + 30
        while (_alive(stage) or _alive(worker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stage) and not _alive(worker)
        with RunLock(checkout / "out"):  # the dead pipeline's lock is taken over
            pass
    finally:
        first.kill()
        for pid in map(int, pids.read_text().split()) if pids.exists() else ():
            if _alive(pid):
                os.kill(pid, 9)
