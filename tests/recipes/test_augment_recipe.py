"""``recipes/augment_rewards.py`` end to end: the tiny config with local responders, and an endpoint server
stopped mid-run (one-line error naming the prompt reached) then restarted (the rerun completes the file)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO, SERVE_COMMAND

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PAIRS = REPO / "chimed_trl" / "data" / "samples" / "reward_pairs.jsonl"
KEY_ENV, KEY = "CHIMED_TEST_AUGMENT_KEY", "sk-test-recipe-5b2d-never-written"


def recipe(*args):
    return [sys.executable, "recipes/augment_rewards.py", "--config", "recipes/tiny/augment.yaml", *args]


def lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_tiny_config_with_local_responders(tiny_model_dir, tokenizer, tmp_path):
    # bugs caught: --responder_model not reaching the responders, local answers not inserted between the
    # human pair, the token tally not matching the answers written
    out = tmp_path / "aug"
    model = str(tiny_model_dir)
    args = ["--output_dir", str(out), "--limit", "2", "--responder_model", f"strong={model}", f"weak={model}"]
    proc = subprocess.run(recipe(*args), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = lines(PAIRS)[:2]
    records = lines(out / "ranked.jsonl")
    assert [(r["responses"][0], r["responses"][-1]) for r in records] == [
        (p["response_chosen"], p["response_rejected"]) for p in pairs
    ]
    assert all(r["sources"] == ["human_chosen", "strong", "weak", "human_rejected"] for r in records)
    assert all(len({*r["responses"]}) == 4 and all(x.strip() for x in r["responses"]) for r in records)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prompts"] == 2 and metrics["file"]["list_sizes"] == {"4": 2}
    for k, name in ((1, "strong"), (2, "weak")):  # hand count with the tokenizer, answer by answer
        expected = sum(len(tokenizer(r["responses"][k], add_special_tokens=False)["input_ids"]) for r in records)
        assert metrics["responders"][name]["completion_tokens"] == expected
        assert metrics["responders"][name]["requested"] == 2 == metrics["responders"][name]["kept"]


def _wait_for_lines(path, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before the server was stopped: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("no record written in time")


def test_server_stopped_mid_run_then_resume_completes_the_file(tiny_model_dir, tiny_server, tmp_path):
    # bugs caught: a traceback (or silence) when the server dies, an error that does not say how far the run
    # got, a torn last line kept, a rerun that asks again for written prompts (duplicates) or skips unwritten
    # ones (missing), the key leaking into the outputs or the log
    from chimed_trl.generation import LaunchedServer

    pytest.importorskip("fastapi")
    command = SERVE_COMMAND.replace("{bindir}", str(Path(sys.executable).parent))
    out, n = tmp_path / "aug", 10
    env = {**ENV, KEY_ENV: KEY}

    def responders(server):
        one = {"base_url": server.base_url, "api_model": server.model, "api_key_env": KEY_ENV, "max_new_tokens": 24}
        sampled = {"temperature": 1.0, "seed": 0, "extra_body": {"generation_config": json.dumps({"do_sample": True})}}
        return json.dumps([{"name": "strong", **one, **sampled}])

    common = ["--output_dir", str(out), "--limit", str(n), "--batch_size", "1", "--max_concurrency", "1"]
    common += ["--max_retries", "1"]

    with LaunchedServer(command, model=str(tiny_model_dir), ready_timeout=120) as server:
        proc = subprocess.Popen(
            recipe(*common, "--responders", responders(server)),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_lines(out / "ranked.jsonl", 2, proc)
    stdout, stderr = proc.communicate(timeout=120)  # the server is gone: the run must stop with one clear line
    assert proc.returncode == 2, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    written = lines(out / "ranked.jsonl")
    assert 2 <= len(written) < n
    assert error.startswith("error: datasets[0] (reward_pairs) record ")
    assert f"(prompt {len(written) + 1}/{n}," in error and "responder 'strong' failed" in error and "rerun" in error
    assert "Traceback" not in stderr and not (out / "metrics.json").exists()

    # a kill in the middle of a write would leave at most a torn last line: the rerun must cut it off
    with (out / "ranked.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"prompt": [{"role": "user", "content": "torn')
    # the restarted server: the session's tiny_server (same model, another port) saves a second ~15 s start
    proc = subprocess.run(
        recipe(*common, "--responders", responders(tiny_server)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = lines(out / "ranked.jsonl")
    assert final[: len(written)] == written  # the first run's records are untouched
    pairs = lines(PAIRS)[:n]
    questions = [r["prompt"][0]["content"] for r in final]
    assert sorted(questions) == sorted(p["question"] for p in pairs)  # no duplicate, no missing prompt
    assert all(r["sources"] == ["human_chosen", "strong", "human_rejected"] for r in final)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["already_done"] == len(written) and metrics["this_run"]["written"] == n - len(written)
    for path in out.iterdir():
        assert KEY not in path.read_text(encoding="utf-8"), path.name
    assert KEY not in proc.stderr + proc.stdout + stderr + stdout
