import hashlib
import json
import shutil

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from chimed_trl.errors import UserError
from chimed_trl.templates import CHATML
from chimed_trl.tiny import TINY_BUILD_MARKER, build_tiny, ensure_tiny, train_tokenizer

MIXED_TEXT = [
    "医生您好，我最近头晕、头痛，血压150/95，2026年体检正常。",
    "Patient's BP is 140/90 mmHg; HbA1c 7.2%.\n\n  双下肢水肿？",
    "<|im_start|>user\n胸闷<|im_end|>\n[human]:咳嗽\n[bot]:",
]


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tiny_model_dir, tmp_path):
    again = build_tiny(tmp_path / "again", seed=0, with_reward_twin=True)
    assert _digests(again) == _digests(tiny_model_dir)
    assert "model.safetensors" in _digests(again) and not list(again.rglob("*.bin"))


def test_tokenizer_round_trip_keeps_class_ids_and_template(tiny_model_dir):
    fresh = train_tokenizer()
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in MIXED_TEXT:
        assert reloaded(text).input_ids == fresh(text).input_ids, text
    assert reloaded.chat_template == CHATML
    assert reloaded.eos_token == "<|endoftext|>" and reloaded.pad_token == "<|pad|>"
    assert reloaded.convert_tokens_to_ids("<|im_end|>") == fresh.convert_tokens_to_ids("<|im_end|>")
    # special tokens are single ids, never split into bytes
    assert len(reloaded("<|im_start|>").input_ids) == 1


def test_tiny_model_shape(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "qwen2" and config.max_position_embeddings >= 4096
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    reward = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward")
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == config.pad_token_id


def _user_model(tiny_model_dir, path):
    """A user's own model: a sharded safetensors checkpoint (what the issue saw destroyed)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(path, max_shard_size="500KB")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    assert len(list(path.glob("model-*.safetensors"))) > 1 and not (path / "model.safetensors").exists()
    return path


# Bug caught: ensure_tiny treated a dir without model.safetensors as "missing" and built over it, deleting
# the shards and replacing config.json (seen on main with build_tiny_model: true and a sharded local model).
def test_ensure_tiny_never_touches_a_user_model(tiny_model_dir, tmp_path):
    user = _user_model(tiny_model_dir, tmp_path / "my-model")
    before = _digests(user)
    with pytest.raises(UserError, match=r"my-model: build_tiny_model: true refuses .*not a tiny build"):
        ensure_tiny(user)
    assert _digests(user) == before  # every byte as the user left it
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="not a tiny build"):
        ensure_tiny(tmp_path / "notes")
    with pytest.raises(UserError, match="not an empty directory"):
        build_tiny(tmp_path / "notes")
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


# Bug caught: a Hub id with build_tiny_model: true created a local folder "Qwen/Qwen2.5-0.5B" holding a
# random model, later recorded as the hub model.
def test_ensure_tiny_refuses_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"'Qwen/Qwen2.5-0.5B' looks like a Hugging Face Hub id"):
        ensure_tiny("Qwen/Qwen2.5-0.5B")
    assert list(tmp_path.iterdir()) == []


# Bugs caught: reusing a build whose files were changed (half-written, or trained over) or that has another
# seed; rebuilding (rewriting) a complete build instead of reusing it.
def test_ensure_tiny_reuses_only_a_complete_build_of_its_own(tiny_model_dir, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, copy)
    mtimes = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    assert ensure_tiny(copy, seed=0) == copy and ensure_tiny(copy) == copy
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == mtimes
    marker = json.loads((copy / TINY_BUILD_MARKER).read_text())
    assert (
        marker["seed"] == 0
        and marker["files"]["model.safetensors"]
        == hashlib.sha256((copy / "model.safetensors").read_bytes()).hexdigest()
    )
    with pytest.raises(UserError, match="seed 0, not the requested seed 1"):
        ensure_tiny(copy, seed=1)
    data = bytearray((copy / "model.safetensors").read_bytes())
    (copy / "model.safetensors").write_bytes(bytes(data[: len(data) // 2]))  # truncated, as by a crash
    with pytest.raises(UserError, match="model.safetensors is missing or differs"):
        ensure_tiny(copy)


# Bug caught: a reward/ twin nobody asked for; building into an empty directory (e.g. made by a launcher) refused.
def test_default_build_has_no_reward_twin_and_fills_an_empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    out = ensure_tiny(tmp_path / "empty")
    assert not (out / "reward").exists() and (out / "model.safetensors").exists()
    assert json.loads((out / TINY_BUILD_MARKER).read_text())["with_reward_twin"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no staging directory left behind


# Bug caught: refusing the previous stage's output (pre-training -> SFT with the tiny configs), or writing into it.
def test_ensure_tiny_leaves_a_finished_run_of_ours_as_it_is(tiny_model_dir, tmp_path):
    run = _user_model(tiny_model_dir, tmp_path / "pretrain")
    (run / "resolved_config.yaml").write_text("training: {}\n")
    (run / "metrics.json").write_text("{}")
    before = _digests(run)
    assert ensure_tiny(run) == run and _digests(run) == before


def _ensure_after(barrier, out, results):
    from chimed_trl.tiny import ensure_tiny

    barrier.wait()
    try:
        results.put(str(ensure_tiny(out, seed=0)))
    except Exception as e:  # noqa: BLE001 - the test reports what the losing process saw
        results.put(f"{type(e).__name__}: {e}")


def test_two_processes_building_one_tiny_model_both_get_it(tmp_path):
    """catches: the second of two concurrent builders (two ranks, two parallel tests) failing on the rename."""
    import multiprocessing

    from chimed_trl.tiny import tiny_build_problem

    ctx = multiprocessing.get_context("fork")
    barrier, results, out = ctx.Barrier(2), ctx.Queue(), tmp_path / "model"
    procs = [ctx.Process(target=_ensure_after, args=(barrier, out, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert got == [str(out), str(out)], got
    assert tiny_build_problem(out, seed=0) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging debris


def test_a_refused_build_exits_2_with_one_line(tmp_path, capsys):
    """Bug caught: ``SystemExit("error: ...")`` exits 1, so ``chimed-trl tiny <a file>`` broke the exit-2 contract that
    every other command keeps for a user's mistake (scripts and the pipeline tell mistakes from crashes by it)."""
    from chimed_trl.tiny import main

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "afile")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert (tmp_path / "afile").read_text() == "mine"
