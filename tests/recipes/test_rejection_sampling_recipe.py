"""recipes/rejection_sampling.py end to end: real subprocesses, real SIGKILL, real 2-process accelerate launch."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ..conftest import REPO, accelerate_launch

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # the tiny model; avoids oversubscribing a shared CPU
    "PYTHONPATH": str(REPO),
}
CONFIG = "recipes/tiny/rejection_sampling.yaml"
CPU_2PROC = "accelerate_configs/cpu_2proc.yaml"
SECRET = "hf_rs_secret_Zq8"  # passed as --hub_token to the one-process run


def command(out, tiny_model_dir, *extra):
    return [
        "recipes/rejection_sampling.py", "--config", CONFIG, "--output_dir", str(out),
        "--model_name_or_path", str(tiny_model_dir), "--reward_model_path", str(tiny_model_dir / "reward"), *extra,
    ]  # fmt: skip


def run(args, timeout=600, ok=True):
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x]


def by_key(rows):
    return {(x["prompt_id"], x["sample"]): x for x in rows}


def same_as_uninterrupted(one: dict, two: dict) -> None:
    """Same answers and kept flags; rewards equal up to float noise (the reward batches are padded differently)."""
    assert one.keys() == two.keys()
    assert all(one[k]["text"] == two[k]["text"] and one[k]["kept"] == two[k]["kept"] for k in one)
    assert all(abs(one[k]["reward"] - two[k]["reward"]) < 1e-4 for k in one)


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rs") / "one"
    run([sys.executable, *command(out, tiny_model_dir, "--num_rounds", "1", "--hub_token", SECRET)])
    return out


def test_hub_token_is_in_no_file_of_the_run(one_process_run):
    # bug: hub_token pickled into rs/training_args.bin and round_*/policy/training_args.bin (the trainer's args),
    # or written to resolved_config.yaml / logs; grep every byte of every file the run wrote
    files = [p for p in one_process_run.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files) and (one_process_run / "metrics.json").exists()
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_two_processes_keep_the_samples_of_one(one_process_run, tiny_model_dir, tmp_path):
    # bugs: samples depend on the shard (per-batch seeds), a rank's samples lost (gather_object returning only
    # the local list), rewards attached to the wrong answers after gathering
    out = tmp_path / "two"
    launched = accelerate_launch(CPU_2PROC, command(out, tiny_model_dir, "--ddp_backend", "gloo"), env=ENV)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-6000:]
    one, two = (
        by_key(lines(one_process_run / "round_0" / "samples.jsonl")),
        by_key(lines(out / "round_0" / "samples.jsonl")),
    )
    assert len(one) == 16 * 4 and one.keys() == two.keys()
    same_as_uninterrupted(one, two)
    assert len({x["text"] for x in one.values()}) > 32  # really sampled, not one greedy answer each

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and [m["round"] for m in metrics["rounds"]] == [0, 1]
    for r in (0, 1):
        stats = json.loads((out / f"round_{r}" / "stats.json").read_text())
        rows = lines(out / f"round_{r}" / "samples.jsonl")
        rewards = [x["reward"] for x in rows]
        assert stats["samples"] == len(rows) == 64 and stats["reward_mean"] == pytest.approx(sum(rewards) / 64)
        assert stats["kept"] == sum(x["kept"] for x in rows) and stats["ranked_records"] == 16
    assert (out / "reward_by_round.png").exists() and (out / "model.safetensors").exists()


@pytest.mark.slow
def test_sigkill_mid_generation_then_resume(one_process_run, tiny_model_dir, tmp_path):
    # bugs: a torn line kept (JSON error on read), prompts generated twice (duplicates), prompts lost, samples
    # of the first attempt regenerated, a finished round redone
    out = tmp_path / "killed"
    args = [sys.executable, *command(out, tiny_model_dir, "--num_rounds", "1", "--generation_batch_size", "1")]
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / "round_0" / "samples.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists() and store.read_text().count("\n") >= 12:  # 3 of 16 prompts written
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = store.read_bytes()
    assert 12 <= before.count(b"\n") < 64, "the kill did not land mid-generation"
    assert not (out / "metrics.json").exists()
    with store.open("ab") as f:  # what a kill inside write() leaves: a torn last line
        f.write(b'{"round": 0, "prompt_id": "torn", "sam')

    resumed = run(args)
    assert "already sampled and scored" in resumed.stderr
    rows = lines(store)  # every line parses: the torn one is gone
    keys = [(x["prompt_id"], x["sample"]) for x in rows]
    assert len(keys) == len(set(keys)) == 16 * 4
    assert store.read_bytes().startswith(before)  # the first attempt's samples were kept, not regenerated
    same_as_uninterrupted(by_key(rows), by_key(lines(one_process_run / "round_0" / "samples.jsonl")))

    finished = [store, out / "round_0" / "policy" / "model.safetensors", out / "metrics.json"]
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    again = run(args)  # a finished run is left alone, metrics.json included (it used to be rewritten)
    assert "holds a finished run" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize("setting", ["tiny", "chimed-gpt", "lora"])
def test_configs_parse(setting):
    # bug: a YAML key the dataclasses do not know (TrlParser fails on it) or a launch command without {model}
    from trl import TrlParser

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.stages.rejection_sampling import RejectionSamplingScriptArguments
    from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig

    types = (RejectionSamplingScriptArguments, RejectionSamplingConfig, ChimedModelConfig)
    path = REPO / "recipes" / setting / "rejection_sampling.yaml"
    script, training, model = TrlParser(types).parse_args_and_config(
        ["--config", str(path), "--bf16", "false", "--use_cpu", "true"]
    )
    assert training.top_k <= training.num_samples and training.assistant_only_loss and script.datasets
    if setting == "chimed-gpt":
        assert training.generation_backend == "launch" and "{port}" in training.generation_server["command"]
    assert model.use_peft == (setting == "lora")


def test_datasets_as_json_on_the_command_line():
    # bug: `datasets: list[Any]` makes argparse fail with "invalid Any value" on --datasets '[...]'
    from trl import TrlParser

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.stages.rejection_sampling import RejectionSamplingScriptArguments, load_prompts
    from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig

    types = (RejectionSamplingScriptArguments, RejectionSamplingConfig, ChimedModelConfig)
    path = "chimed_trl/data/samples/ranked.jsonl"
    script, _, _ = TrlParser(types).parse_args_and_config(
        ["--config", str(REPO / CONFIG), "--bf16", "false", "--use_cpu", "true", "--max_prompts", "3",
         "--datasets", json.dumps([{"formatter": "ranked", "path": str(REPO / path)}])]
    )  # fmt: skip
    assert [s.path for s in script.datasets] == [str(REPO / path)]
    first = [json.loads(x) for x in (REPO / path).read_text(encoding="utf-8").splitlines()[:3]]
    assert [row["prompt"] for row in load_prompts(script)[0]] == [r["prompt"] for r in first]  # the file's own rows


def recipe_main(argv, capsys):
    """The recipe's own entry point (run_recipe + TrlParser), in process: exit code and the last stderr line."""
    import importlib.util

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.stages.rejection_sampling import RejectionSamplingScriptArguments
    from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig

    spec = importlib.util.spec_from_file_location("rs_recipe", REPO / "recipes" / "rejection_sampling.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    types = (RejectionSamplingScriptArguments, RejectionSamplingConfig, ChimedModelConfig)
    with pytest.raises(SystemExit) as exit_info:
        recipe.run_recipe(recipe.main, types, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err.strip().splitlines()[-1]


def test_cli_bad_input_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys, monkeypatch):
    # bug: a traceback (or a silently empty run) for a user's mistake; output written before the check
    monkeypatch.chdir(REPO)
    out = tmp_path / "bad"
    code, last = recipe_main(command(out, tiny_model_dir, "--top_k", "9")[1:], capsys)
    assert code == 2
    # (a newer run_recipe appends where a config error came from: the YAML or its overrides)
    assert last.startswith("error: top_k=9 is larger than num_samples=4: there are not that many answers to keep")
    assert not out.exists()

    # bug: 0 read as "no limit" (`rows[:n] if n else rows`): every prompt silently used
    code, last = recipe_main(command(out, tiny_model_dir, "--max_prompts", "0")[1:], capsys)
    assert code == 2 and last.startswith("error: max_prompts=0 must be >= 1")
    assert not out.exists()

    data = tmp_path / "prompts.jsonl"
    bad = {"prompt": [{"role": "user", "content": "头晕"}, {"role": "assistant", "content": "去哪个科？"}],
           "responses": ["a", "b"]}  # fmt: skip
    good = {"prompt": [{"role": "user", "content": "胸闷"}], "responses": ["a", "b"]}
    data.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n")
    cfg = yaml.safe_load((REPO / CONFIG).read_text())
    cfg["datasets"] = [{"formatter": "ranked", "path": str(data)}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    args = command(out, tiny_model_dir)[1:]
    args[args.index(CONFIG)] = str(tmp_path / "c.yaml")
    code, last = recipe_main(args, capsys)
    assert code == 2
    assert (
        last
        == f"error: datasets[0] {data}: record[1]: field 'prompt': must end with a user turn, ends with 'assistant'"
    )
    assert not out.exists()


def test_cli_bad_number_and_dead_server_are_one_line_before_any_load(tiny_model_dir, tmp_path, capsys, monkeypatch):
    # bugs caught: learning_rate -1 as a torch traceback after a whole generation round; a dead generation
    # server as a 100-line chained traceback after the policy and reward model loaded; the output dir claimed
    monkeypatch.chdir(REPO)
    out = tmp_path / "bad"
    code, last = recipe_main(command(out, tiny_model_dir, "--learning_rate", "-1")[1:], capsys)
    assert code == 2 and last.startswith("error: learning_rate must be > 0, got -1.0 (in recipes/tiny/")
    assert not out.exists()

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused while we hold it (no free-port race)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        server = ["--generation_backend", "server", "--generation_base_url", url, "--num_rounds", "1"]
        code, last = recipe_main(command(out, tiny_model_dir, *server)[1:], capsys)
    assert code == 2 and last.startswith(f"error: generation server {url} (model ") and "start the server" in last
    assert not out.exists()


def test_max_prompts_says_how_many_prompts_it_uses(caplog):
    # bug caught: 16 of 100 prompts used with no word about it
    from chimed_trl.stages.rejection_sampling import RejectionSamplingScriptArguments, load_prompts

    script = RejectionSamplingScriptArguments(
        datasets=[{"formatter": "ranked", "path": str(REPO / "chimed_trl/data/samples/ranked.jsonl")}], max_prompts=16
    )
    with caplog.at_level("INFO", logger="chimed_trl.stages.rejection_sampling"):
        assert len(load_prompts(script)[0]) == 16
    assert "using 16 of 40 prompts (max_prompts)" in caplog.text


@pytest.mark.slow
def test_two_processes_on_a_server_keep_the_samples_of_one(tiny_model_dir, tmp_path):
    # generation_backend: server under a real 2-process accelerate launch: the main process keeps every request
    # in flight and deals the finished prompts to both ranks for scoring. Bugs caught: both ranks requesting
    # (every request twice), a rank's shard lost or scored twice, a deadlock between the broadcast and the
    # gather, samples differing from one process.
    from ..generation.openai_stub import StubProcess

    outs = {"one": tmp_path / "one", "two": tmp_path / "two"}
    with StubProcess("--latency", "0.05") as server:
        server_args = ["--generation_backend", "server", "--generation_base_url", server.base_url,
                       "--generation_model", "m", "--generation_honours_n", "true", "--num_rounds", "1"]  # fmt: skip
        run([sys.executable, *command(outs["one"], tiny_model_dir, *server_args)])
        launched = accelerate_launch(
            CPU_2PROC, command(outs["two"], tiny_model_dir, *server_args, "--ddp_backend", "gloo"), env=ENV
        )
        assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-6000:]
    one, two = (by_key(lines(out / "round_0" / "samples.jsonl")) for out in outs.values())
    assert len(one) == 16 * 4 and one.keys() == two.keys()
    same_as_uninterrupted(one, two)
    generated = lines(outs["two"] / "round_0" / "generated.jsonl")
    assert len(generated) == len({(x["prompt_id"], x["sample"]) for x in generated}) == 64  # asked once each
    stats = json.loads((outs["two"] / "round_0" / "stats.json").read_text())
    assert stats["samples"] == 64 and stats["truncated"] == 0
    assert json.loads((outs["two"] / "metrics.json").read_text())["world_size"] == 2


# Bugs caught (issue 16): RS wrote no train.log/data_stats.json although every run should; it rewrote metrics.json
# on every rerun of a finished run; it rejected --overwrite_output_dir (the only way out of a run with wrong
# settings was deleting the folder); a refused first attempt left bookkeeping behind that then blocked a
# corrected rerun.
def test_run_directory_contract(one_process_run, tiny_model_dir, tmp_path):
    stats = json.loads((one_process_run / "data_stats.json").read_text())
    config = yaml.safe_load((REPO / CONFIG).read_text())
    assert stats["prompts_used"] == config["max_prompts"] < stats["prompts_read"]
    assert f"prompts: 16 used of {stats['prompts_read']} read" in (one_process_run / "train.log").read_text()
    finished = (one_process_run / "metrics.json").read_bytes()
    again = run([sys.executable, *command(one_process_run, tiny_model_dir, "--num_rounds", "1")])
    assert "holds a finished run" in again.stderr and (one_process_run / "metrics.json").read_bytes() == finished

    out = tmp_path / "rs"
    small = ["--num_rounds", "1", "--max_prompts", "2", "--num_samples", "2", "--top_k", "1", "--max_new_tokens", "8"]
    bad = run([sys.executable, *command(out, tiny_model_dir, *small), "--reward_model_path", str(tmp_path / "nope")],
              ok=False)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and not out.exists()
    run([sys.executable, *command(out, tiny_model_dir, *small)])
    first = (out / "metrics.json").read_bytes()
    run(
        [
            sys.executable,
            *command(out, tiny_model_dir, *small, "--temperature", "0.5", "--overwrite_output_dir", "true"),
        ]
    )
    (previous,) = (out / ".previous").iterdir()
    assert (previous / "metrics.json").read_bytes() == first and (previous / "round_0" / "samples.jsonl").exists()
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["training"]["temperature"] == 0.5


def test_cli_reward_funcs_parse_and_a_bad_path_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    # bugs caught: --reward_funcs / --reward_weights not taking lists from the command line; a bad dotted path
    # as an ImportError traceback (or found after the policy loaded), the key not named, the output dir claimed
    from transformers import HfArgumentParser

    from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig

    (parsed,) = HfArgumentParser(RejectionSamplingConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path / "p"), "--use_cpu", "--bf16", "false", "--reward_funcs", "chimed_trl.scoring.repetition_penalty",
         "chimed_trl.scoring.template_leak_penalty", "--reward_weights", "1", "0.5", "2"]
    )  # fmt: skip
    assert parsed.reward_funcs == ["chimed_trl.scoring.repetition_penalty", "chimed_trl.scoring.template_leak_penalty"]
    assert parsed.reward_weights == [1.0, 0.5, 2.0]
    monkeypatch.chdir(REPO)
    out = tmp_path / "bad"
    code, last = recipe_main(command(out, tiny_model_dir, "--reward_funcs", "no_such_pkg.rules.length_penalty")[1:],
                             capsys)  # fmt: skip
    assert code == 2 and last.startswith("error: reward_funcs[0]='no_such_pkg.rules.length_penalty': cannot import")
    assert not out.exists()
