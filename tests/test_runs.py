"""Rerun rules of chimed_trl.runs: finished runs left alone, config-diff refusal, half-written checkpoints skipped."""

import json

import pytest
import torch
from safetensors.torch import save_file

from chimed_trl.errors import UserError
from chimed_trl.runs import (
    FinishedRun,
    checkpoint_problem,
    last_checkpoint,
    move_secrets_to_env,
    prepare_output_dir,
    redact,
    write_resolved_config,
)

RESOLVED = {"training": {"learning_rate": 0.003, "num_train_epochs": 4, "logging_steps": 1}, "model": {"lora_r": 8}}


def _checkpoint(root, step, state=True, truncate=False):
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, ckpt / "model.safetensors")
    if truncate:
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) - 100])
    if state:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


# Bug caught: transformers' get_last_checkpoint picks the newest checkpoint-N even when the save was cut short
# (no trainer_state.json, or a truncated safetensors), and resuming from it crashes or loads garbage.
def test_half_written_checkpoints_are_skipped(tmp_path):
    _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 10, state=False)
    _checkpoint(tmp_path, 15, truncate=True)
    assert checkpoint_problem(tmp_path / "checkpoint-5") is None
    assert "no trainer_state.json" in checkpoint_problem(tmp_path / "checkpoint-10")
    assert "truncated" in checkpoint_problem(tmp_path / "checkpoint-15")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")


def _run(root, finished=False, resolved=RESOLVED):
    root.mkdir()
    write_resolved_config(root, resolved)
    _checkpoint(root, 20)
    if finished:
        (root / "metrics.json").write_text('{"steps": 20}')
    return root


# Bugs caught: rerunning a finished run trained 0 steps and overwrote metrics.json with zeros; a changed
# hyper-parameter silently continued the old run.
def test_finished_run_is_left_alone_and_a_changed_config_is_refused(tmp_path):
    out = _run(tmp_path / "done", finished=True)
    with pytest.raises(FinishedRun, match="holds a finished run"):
        prepare_output_dir(out, RESOLVED)
    changed = {**RESOLVED, "training": {**RESOLVED["training"], "learning_rate": 0.001}}
    with pytest.raises(UserError, match=r"differs in training.learning_rate: 0.003 -> 0.001\. Rerun") as e:
        prepare_output_dir(out, changed)
    assert not isinstance(e.value, FinishedRun)
    assert (out / "metrics.json").read_text() == '{"steps": 20}'

    running = _run(tmp_path / "running")
    assert prepare_output_dir(running, RESOLVED).resume == str(running / "checkpoint-20")
    # where it logs may change on resume; what it trains may not
    neutral = {**RESOLVED, "training": {**RESOLVED["training"], "logging_steps": 10}}
    assert prepare_output_dir(running, neutral).resume == str(running / "checkpoint-20")
    longer = {**RESOLVED, "training": {**RESOLVED["training"], "num_train_epochs": 6}}
    with pytest.raises(UserError, match=r"unfinished run \(resumable from checkpoint-20\).*num_train_epochs: 4 -> 6"):
        prepare_output_dir(running, longer)


# Bugs caught: overwrite deleting files (the old run's, or a user's notes beside it), or leaving the old
# checkpoints in place (which would then be resumed).
def test_overwrite_moves_the_old_run_aside_whole(tmp_path):
    out = _run(tmp_path / "done", finished=True)
    (out / "notes.txt").write_text("mine")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    claim = prepare_output_dir(out, {**RESOLVED, "training": {"learning_rate": 1.0}}, overwrite=True)
    assert claim.resume is None and claim.moved_to.parent == out / ".previous"
    assert [p.name for p in out.iterdir()] == [".previous"]
    moved = {p.relative_to(claim.moved_to): p.read_bytes() for p in claim.moved_to.rglob("*") if p.is_file()}
    assert moved == before


# Bugs caught: writing a run into a user's model directory; finding out the output dir is unwritable only
# after hours of data loading.
def test_foreign_or_unwritable_output_dir_is_refused_up_front(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"is not empty and holds no run of this package .*config.json"):
        prepare_output_dir(tmp_path / "model", RESOLVED, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"output_dir '.*file/run' cannot be written"):
        prepare_output_dir(tmp_path / "file" / "run", RESOLVED)


# Bug caught: hub_token pickled into training_args.bin; eos_token/pad_token wrongly redacted as "secrets".
def test_secrets_leave_the_arguments(monkeypatch):
    from trl import SFTConfig

    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = SFTConfig(output_dir="x", hub_token="hf_abc123", bf16=False, use_cpu=True, report_to=[])
    move_secrets_to_env(args)
    assert args.hub_token is None and __import__("os").environ["HF_TOKEN"] == "hf_abc123"
    assert redact({"eos_token": "<e>", "hub_token": "t", "api_key": "k"}) == {
        "eos_token": "<e>",
        "hub_token": "<redacted>",
        "api_key": "<redacted>",
    }


# Bug caught: `overwrite_output_dir` pointed at another stage's finished run deleted its metrics and let this
# recipe write its model over the other's (a reward model over a rejection-sampled policy, an SFT run over the
# pre-training it started from). A run of another recipe is refused, with or without the flag, and left intact.
@pytest.mark.parametrize("saved_run", [{"run": {"recipe": "reward"}}, {"script": {"stage": "pretrain"}}])
def test_another_recipes_run_is_never_overwritten(tmp_path, saved_run):
    saved = {**saved_run, **RESOLVED}
    write_resolved_config(tmp_path, saved)
    (tmp_path / "metrics.json").write_text('{"stage": "theirs"}')
    (tmp_path / "model.safetensors").write_bytes(b"their weights")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    mine = {"run": {"recipe": "sft"}, **RESOLVED}
    for overwrite in (False, True):
        with pytest.raises(UserError, match="not a 'sft' one"):
            prepare_output_dir(tmp_path, mine, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# Bug caught: another tool's output (a metrics.json, a checkpoint-N) taken for a run of ours: a rerun returned
# their metrics as its own, a resume loaded their checkpoint with no config check, and overwrite deleted them.
@pytest.mark.parametrize("theirs", ["metrics.json", "checkpoint-5"])
def test_only_our_resolved_config_marks_a_run(tmp_path, theirs):
    if theirs == "metrics.json":
        (tmp_path / theirs).write_text('{"accuracy": 0.9}')
    else:
        _checkpoint(tmp_path, 5)
    (tmp_path / "model.safetensors").write_bytes(b"their weights")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="holds no run of this package"):
            prepare_output_dir(tmp_path, RESOLVED, overwrite=overwrite)
    assert (tmp_path / theirs).exists() and (tmp_path / "model.safetensors").read_bytes() == b"their weights"


# Bugs caught: two runs writing into one directory at once (a rerun while an orphaned stage still trains);
# a lock left by a killed run blocking every later run.
def test_one_run_per_directory(tmp_path):
    import subprocess
    import sys

    from chimed_trl.runs import LOCK_FILE, RunLock

    first = prepare_output_dir(tmp_path / "run", RESOLVED, lock=True)
    with pytest.raises(UserError, match=r"in use by another run \(pid \d+"):
        prepare_output_dir(tmp_path / "run", RESOLVED, lock=True)
    first.lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    # a holder that died (a real process, already reaped) is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == __import__("os").getpid()


# Bug caught: a run refused on its data left resolved_config.yaml and an empty train.log in a new directory
# (which then looked like a run of ours); a directory holding anything else must be left alone.
def test_a_refused_run_leaves_nothing_behind(tmp_path):
    from chimed_trl.runs import remove_if_only_ours

    claim = prepare_output_dir(tmp_path / "new" / "run", RESOLVED)
    write_resolved_config(claim.out, RESOLVED)
    (claim.out / "train.log").write_text("")
    assert remove_if_only_ours(claim) and not (tmp_path / "new" / "run").exists() and (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # the user's empty directory stays, emptied of our files only
    claim = prepare_output_dir(tmp_path / "empty", RESOLVED)
    write_resolved_config(claim.out, RESOLVED)
    assert remove_if_only_ours(claim) and list((tmp_path / "empty").iterdir()) == []
    claim = prepare_output_dir(tmp_path / "kept", RESOLVED)
    write_resolved_config(claim.out, RESOLVED)
    (claim.out / "samples.jsonl").write_text("{}\n")  # a result: kept
    assert not remove_if_only_ours(claim) and (claim.out / "samples.jsonl").exists()


# Bugs caught: `api_key_env: sk-...` (a key pasted into the name field) echoed to stderr and saved; the saved
# config showing `api_key_env: <redacted>` for a plain variable name (the reader no longer knows what to export).
def test_api_key_env_names_are_kept_and_pasted_keys_never_shown(monkeypatch):
    from chimed_trl.runs import api_key_from_env

    saved = redact({"api_key_env": "OPENAI_API_KEY", "generation_api_key_env": "sk-proj-abc123", "token": "t"})
    assert saved == {"api_key_env": "OPENAI_API_KEY", "generation_api_key_env": "<redacted>", "token": "<redacted>"}
    with pytest.raises(UserError) as e:
        api_key_from_env("sk-proj-abc123", "responder 'gpt4': api_key_env")
    assert "abc123" not in str(e.value) and "name of an environment variable" in str(e.value)
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(UserError, match="environment variable MY_KEY is not set"):
        api_key_from_env("MY_KEY", "api_key_env")
    monkeypatch.setenv("MY_KEY", "k-123")
    assert api_key_from_env("MY_KEY", "api_key_env") == "k-123" and api_key_from_env(None, "x") == "EMPTY"


# Bug caught (review): a directory holding only dotfiles (a git checkout, a .env) counted as empty, so a run wrote
# its checkpoints and model into it. Only our own lock, .previous and temp files are not "contents".
def test_a_users_dotfiles_make_a_directory_theirs(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / ".env").write_text("SECRET=1")
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"holds no run of this package .*found \.env, \.git"):
            prepare_output_dir(tmp_path / "repo", RESOLVED, overwrite=overwrite)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".env", ".git"]
    ours = tmp_path / "ours"  # our own lock and an interrupted atomic write leave a directory empty
    ours.mkdir()
    (ours / ".run.lock").write_text("{}")
    (ours / ".metrics.json.123.tmp").write_text("")
    assert prepare_output_dir(ours, RESOLVED).fresh
