"""Every stage against a directory of someone else's files: refused in one line, and following the message's
advice literally (the flag it names) still leaves every file byte-identical (run in-process, as __main__ does)."""

import importlib.util
import re

import pytest

from chimed_trl.cli import run_recipe

from ..conftest import REPO

# Foreign contents: a lone metrics.json (what augmentation once took for a finished run of its own and then
# overwrote), and a directory that looks like a model or a checkpointed run of another tool.
FOREIGN = {
    "lone_metrics": {"metrics.json": b'{"accuracy": 0.91, "mine": true}\n'},
    "dotfiles_only": {".env": b"SECRET=1\n", ".git/HEAD": b"ref: refs/heads/main\n"},  # a checkout is not empty
    "model_and_checkpoint": {
        "metrics.json": b'{"loss": 1.5}\n',
        "model.safetensors": b"their weights",
        "checkpoint-5/trainer_state.json": b'{"global_step": 5}',
        "notes.txt": "病人笔记".encode(),
    },
}
STAGES = {
    "pretrain": "recipes/tiny/pretrain.yaml",
    "sft": "recipes/tiny/sft.yaml",
    "reward": "recipes/tiny/reward.yaml",
    "augment_rewards": "recipes/tiny/augment.yaml",
    "rejection_sampling": "recipes/tiny/rejection_sampling.yaml",
    "evaluate": "recipes/tiny/evaluate.yaml",
    "ablation_report": "recipes/tiny/ablation_report.yaml",
}
# advice that names a flag: the flag as it is passed on the command line
FLAG_ADVICE = {"overwrite_output_dir": ["--overwrite_output_dir", "true"]}


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_refusal(capsys, module, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_recipe(module.main, module.ARGUMENT_TYPES, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# Bugs caught: a stage that takes another tool's metrics.json for a finished run of its own and, told to
# overwrite (as its own message advised), deletes or rewrites it; a message advising to delete a file this
# package did not write; a stage that writes its bookkeeping (resolved_config.yaml, train.log) next to the
# user's files before refusing.
@pytest.mark.parametrize("foreign", sorted(FOREIGN))
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_following_the_advice_never_touches_foreign_files(capsys, tmp_path, tiny_model_dir, stage, foreign):
    out = tmp_path / "theirs"
    for name, data in FOREIGN[foreign].items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = _snapshot(out)
    module = _recipe(stage)
    argv = ["--config", str(REPO / STAGES[stage]), "--output_dir", str(out)]
    if stage == "ablation_report":  # reads runs, loads no model; refused before it reads them
        argv += ["--binary_reward", str(tmp_path / "a"), "--listwise_reward", str(tmp_path / "b")]
    elif stage != "augment_rewards":
        argv += ["--model_name_or_path", str(tiny_model_dir)]
    line = _one_line_refusal(capsys, module, argv)
    assert not re.search(r"\b(delete|remove|rm)\b", line), line  # never advise deleting what we did not write
    assert _snapshot(out) == before
    for key, flag in FLAG_ADVICE.items():
        if key in line:  # do literally what the message says
            second = _one_line_refusal(capsys, module, [*argv, *flag])
            assert not re.search(r"\b(delete|remove|rm)\b", second), second
    assert _snapshot(out) == before, f"{stage} changed {out} after: {line}"


# The same for the merge tool: `--overwrite` never licenses writing a merged model over a user's directory.
@pytest.mark.parametrize("foreign", sorted(FOREIGN))
def test_merge_never_writes_over_a_foreign_directory(capsys, tmp_path, tiny_model_dir, foreign):
    import json

    from chimed_trl.merge import main as merge_main

    out, adapter = tmp_path / "theirs", tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    for name, data in FOREIGN[foreign].items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            merge_main(["--base", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(out), *extra])
        assert e.value.code == 2 and "holds no run of this package" in capsys.readouterr().err
    assert _snapshot(out) == before
