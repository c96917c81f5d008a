"""recipes/evaluate.py end to end on the tiny model, and the OpenAI-compatible client against a real local server."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.stages.evaluate import run_evaluation

from ..conftest import REPO

SAMPLES = REPO / "chimed_trl/data/samples"


@pytest.mark.slow
def test_evaluate_recipe_writes_reports(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/evaluate.py",
            "--config",
            "recipes/tiny/evaluate.yaml",
            "--output_dir",
            str(out),
            "--model_name_or_path",
            str(tiny_model_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["tasks"]) == {"choice", "ner", "dialogue", "scales"}
    assert report["tasks"]["choice"]["total"] == 20 and report["tasks"]["choice"]["shots_used"] == {"min": 2, "max": 2}
    assert "BLEU-1 (paper_compat)" in report["tasks"]["dialogue"]["scores"]
    assert (
        report["tasks"]["scales"]["MICA"]["items"] == 16 and "position_agreement" in report["tasks"]["scales"]["CAMI"]
    )
    for chart in report["charts"]:
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "## Multiple-choice QA" in md and "## Attitude scales" in md
    # the paper's reference rows, with denominators; this run (20 of 40 bundled triage items) is *not* in the
    # CMMLU column it was set beside, and the report says why (issue 16: limited / stand-in rows)
    assert "| ChiMed-GPT | 68.29 | 52.92 | 44.50 |" in md and "617/1166" in md and "28/41" in md
    assert "| ChiMed-GPT | 44.58 | 37.22 | 27.11 | 8.89 | 19.86 |" in md and "SFT mix" in md
    assert report["paper"]["this_run"] == {}
    reasons = report["paper"]["not_placed"]["CMMLU"]["reasons"]
    assert reasons[:2] == ["20 of 40 items (limit: 20)", "bundled sample, not the benchmark"]
    assert report["paper"]["not_placed"]["CMMLU"]["denominator"] == 20
    assert "**Not placed in the CMMLU column**" in md and "**this run**" not in md
    assert "Scored on **20 of 40 items** (limit: 20); **bundled sample, not the benchmark**." in md
    # per-item records for every task, linked from the report
    lines = {t: (out / "items" / f"{t}.jsonl").read_text("utf-8").splitlines() for t in report["tasks"]}
    assert {t: len(v) for t, v in lines.items()} == {"choice": 20, "ner": 20, "dialogue": 20, "scales": 56}
    for task in report["tasks"]:
        assert f"](items/{task}.jsonl)" in md
    first = json.loads(lines["choice"][0])
    assert first["prompt"].startswith("以下是关于triage的单项选择题") and first["prompt"].endswith("答案是：")
    assert set(first["probabilities"]) == {"A", "B", "C", "D"} and first["correct"] == (
        first["prediction"] == first["gold"]
    )
    for chart in report["charts"]:
        assert f"]({chart})" in md  # linked from report.md
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["choice_total"] == 20 and (out / "resolved_config.yaml").exists()
    assert (out / "tasks" / "scales.json").exists()
    details = json.loads((out / "details.json").read_text())
    assert len(details["choice"]["items"]) == 20


class _ChatHandler(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_GET(self):  # noqa: N802 - the pre-flight's model list
        data = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatHandler.seen_auth.append(self.headers.get("Authorization", ""))
        text = body["messages"][-1]["content"]
        answer = "答案是A" if "答案" in text or "选项" in text else "建议到医院就诊。"
        payload = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_api_baseline_against_local_server(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CHIMED_TEST_KEY", "sk-secret-123")
    try:
        args = EvalArguments(
            output_dir=str(tmp_path),
            api_base_url=f"http://127.0.0.1:{server.server_port}/v1",
            api_model="m",
            api_key_env="CHIMED_TEST_KEY",
            tasks=["choice", "dialogue", "scales"],
            max_new_tokens=16,
            choice_datasets=[{"formatter": "choice", "path": str(REPO / "chimed_trl/data/samples/choice_test.jsonl")}],
            dialogue_datasets=[
                {"formatter": "dialogue_eval", "path": str(REPO / "chimed_trl/data/samples/dialogue_eval.jsonl")}
            ],
            scale_datasets=[
                {"formatter": "scale_item", "path": str(REPO / "chimed_trl/data/samples/scale_items.jsonl")}
            ],
            limit=5,
        )
        result = run_evaluation(args)
        # catches: --overwrite_output_dir deleting the earlier evaluation instead of moving it aside, whole
        before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        args.overwrite_output_dir = True
        assert run_evaluation(args)["tasks"]["choice"]["total"] == 5
        (previous,) = (tmp_path / ".previous").iterdir()
        assert {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    finally:
        server.shutdown()
    assert result["settings"]["choice_mode"] == "generate"
    assert result["tasks"]["choice"]["total"] == 5
    # catches: an API run's report that does not say which served model answered (issue 16)
    assert "- api_model: `m`" in (tmp_path / "report.md").read_text("utf-8")
    # catches: an assertion that only checks BLEU >= 0. The server answered "建议到医院就诊。" to every dialogue:
    # the exact corpus BLEU-1 against the first 5 references, by the brute-force reference implementation.
    from .test_text_metrics import chars, reference_corpus_bleu

    refs = [json.loads(x)["reference"] for x in (SAMPLES / "dialogue_eval.jsonl").read_text("utf-8").splitlines()[:5]]
    expected = reference_corpus_bleu([chars("建议到医院就诊。")] * 5, [chars(r) for r in refs], (1.0,))
    assert result["tasks"]["dialogue"]["scores"]["BLEU-1"] == pytest.approx(expected, abs=1e-6) and expected > 0
    # it answered "答案是A" to every question: accuracy = share of A answers among the first 5 (hand count: 0)
    answers = [json.loads(x)["answer"] for x in (SAMPLES / "choice_test.jsonl").read_text("utf-8").splitlines()[:5]]
    assert result["tasks"]["choice"]["correct"] == answers.count("A")
    assert all(p["prediction"] == "A" for p in result["tasks"]["choice"]["items"])
    assert result["tasks"]["scales"]["MICA"]["most_chosen"] == "A" and result["tasks"]["scales"]["MICA"]["degenerate"]
    assert _ChatHandler.seen_auth and all(a == "Bearer sk-secret-123" for a in _ChatHandler.seen_auth)
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):  # the key never reaches saved outputs
        assert "sk-secret-123" not in path.read_bytes().decode("utf-8", "ignore")


def test_eval_arguments_errors(tmp_path):
    from chimed_trl.errors import UserError

    choice = [{"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}]
    with pytest.raises(UserError, match="unknown"):
        EvalArguments(tasks=["choice", "poetry"], choice_datasets=choice)
    # catches: a requested task with no dataset silently skipped
    with pytest.raises(UserError, match="'ner' is requested but ner_datasets is empty"):
        EvalArguments(tasks=["choice", "ner"], choice_datasets=choice)
    # catches: an unknown preset surfacing as a bare KeyError
    with pytest.raises(UserError, match="choice_subjects: unknown preset 'cmmlu'"):
        EvalArguments(choice_datasets=choice, choice_subjects="cmmlu")
    with pytest.raises(UserError, match="model_name_or_path"):
        run_evaluation(EvalArguments(output_dir=str(tmp_path / "e"), choice_datasets=choice))


# Catches: a training run's directory (it also holds resolved_config.yaml + metrics.json) taken for an evaluation
# "with a different config", and --overwrite_output_dir then writing over the training run's files.
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_dir_of_a_training_run_is_refused(tmp_path, overwrite):
    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.errors import UserError

    run = tmp_path / "rm"
    run.mkdir()
    files = {
        "resolved_config.yaml": b"model:\n  dtype: float32\nscript:\n  test_size: 0.1\ntraining:\n  max_length: 64\n",
        "metrics.json": b'{"loss_last": 0.1}\n',
        "model.safetensors": b"weights",
    }
    for name, data in files.items():
        (run / name).write_bytes(data)
    choice = [{"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}]
    args = EvalArguments(output_dir=str(run), choice_datasets=choice, overwrite_output_dir=overwrite)
    with pytest.raises(UserError, match=r"holds a 'model\+script\+training' run, not an evaluation"):
        run_evaluation(args, ChimedModelConfig(model_name_or_path="unused-because-the-dir-is-refused-first"))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files


# Catches: `--choice_datasets '[...]'` / `--dialogue_datasets '[...]'` refused by argparse ("invalid Any value") or
# losing the `{name}[{i}]` place naming; batch_size 0 reaching the generator; an adapter directory without
# adapter_config.json failing inside peft with a traceback after minutes of model loading (and after writing output).
def test_cli_json_sources_batch_size_and_adapter_errors(tmp_path):
    from chimed_trl.cli import parse_recipe_args
    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.data.sources import source_from_config
    from chimed_trl.errors import UserError

    choice = {"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}
    dialogue = {"formatter": "dialogue_eval", "path": str(SAMPLES / "dialogue_eval.jsonl")}
    argv = ["--output_dir", str(tmp_path / "o"), "--choice_datasets", json.dumps([choice, choice])]
    argv += ["--dialogue_datasets", json.dumps([dialogue])]
    args, _ = parse_recipe_args((EvalArguments, ChimedModelConfig), argv)
    assert args.choice_datasets == [source_from_config(choice, "choice_datasets[0]")] * 2
    assert args.dialogue_datasets == [source_from_config(dialogue, "dialogue_datasets[0]")]
    assert args.tasks == ["choice", "dialogue"]
    with pytest.raises(UserError, match=r"choice_datasets\[1\]"):  # the place of the bad entry, as from YAML
        parse_recipe_args((EvalArguments,), ["--choice_datasets", json.dumps([choice, {"path": "x.jsonl"}])])
    with pytest.raises(UserError, match="batch_size: must be >= 1, got 0"):
        EvalArguments(choice_datasets=[choice], batch_size=0)
    not_adapter = tmp_path / "not_adapter"
    not_adapter.mkdir()
    out = tmp_path / "e"
    args = EvalArguments(output_dir=str(out), choice_datasets=[choice], adapter_path=str(not_adapter))
    with pytest.raises(UserError, match=rf"adapter_path: {not_adapter} has no adapter_config.json"):
        run_evaluation(args, ChimedModelConfig(model_name_or_path="unused-because-the-adapter-is-refused-first"))
    assert not out.exists()


def test_bad_evaluation_data_is_one_clear_error(tmp_path):
    """Duplicate ids and empty option texts name the file, record and field (no silent acceptance)."""
    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.errors import UserError

    rows = [json.loads(x) for x in (SAMPLES / "choice_test.jsonl").read_text("utf-8").splitlines()[:3]]
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [rows[0], rows[1], rows[0]]) + "\n")
    args = EvalArguments(output_dir=str(tmp_path / "e1"), choice_datasets=[{"formatter": "choice", "path": str(dup)}])
    with pytest.raises(UserError, match=rf"dup.jsonl record 3: field id: duplicate id '{rows[0]['id']}'"):
        run_evaluation(args, ChimedModelConfig(model_name_or_path="unused-because-data-fails-first"))
    empty = tmp_path / "empty_option.jsonl"
    empty.write_text(json.dumps({**rows[0], "options": {**rows[0]["options"], "B": " "}}, ensure_ascii=False) + "\n")
    args = EvalArguments(
        output_dir=str(tmp_path / "e2"), choice_datasets=[{"formatter": "choice", "path": str(empty)}]
    )
    with pytest.raises(UserError, match=r"empty_option.jsonl.*options.B.*empty option text"):
        run_evaluation(args, ChimedModelConfig(model_name_or_path="x"))


def test_lora_adapter_is_applied(tiny_model_dir, tmp_path):
    """catches: an adapter loaded for evaluation and then ignored. The adapter's B matrices are perturbed (a
    fresh LoRA is a no-op), and the harness's letter probabilities must equal plain peft + transformers on it."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.evaluation.choice import build_prompt

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    choice = [{"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}]
    common = dict(tasks=["choice"], choice_datasets=choice, limit=4)
    model_args = ChimedModelConfig(model_name_or_path=str(tiny_model_dir))
    plain = run_evaluation(EvalArguments(output_dir=str(tmp_path / "plain"), **common), model_args)
    lora = run_evaluation(
        EvalArguments(output_dir=str(tmp_path / "lora"), adapter_path=str(adapter), **common), model_args
    )
    assert lora["settings"]["adapter"] == str(adapter)
    first_plain, first_lora = plain["tasks"]["choice"]["items"][0], lora["tasks"]["choice"]["items"][0]
    assert first_plain["probabilities"] != pytest.approx(first_lora["probabilities"], abs=1e-3)
    # independent: plain peft on the base, the letter logits at the prompt's last position
    record = json.loads((SAMPLES / "choice_test.jsonl").read_text("utf-8").splitlines()[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    prompt = build_prompt(record)
    letters = list(record["options"])
    with torch.no_grad():
        last = reference(input_ids=tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1]
    expected = last[[tokenizer(prompt + x).input_ids[-1] for x in letters]].softmax(-1).tolist()
    assert [first_lora["probabilities"][x] for x in letters] == pytest.approx(expected, abs=1e-4)


def test_interrupted_api_run_keeps_finished_tasks_and_resumes(tmp_path, monkeypatch):
    """An API that goes away mid-run: one clear error, the finished task kept on disk, and a rerun of the same
    config continues without asking the finished task's prompts again."""
    from chimed_trl.errors import UserError

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_port
    monkeypatch.setenv("CHIMED_TEST_KEY", "k")
    args = dict(
        output_dir=str(tmp_path / "run"),
        api_base_url=f"http://127.0.0.1:{port}/v1",
        api_model="m",
        api_key_env="CHIMED_TEST_KEY",
        tasks=["choice", "dialogue"],
        max_new_tokens=8,
        batch_size=2,
        choice_datasets=[{"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}],
        dialogue_datasets=[{"formatter": "dialogue_eval", "path": str(SAMPLES / "dialogue_eval.jsonl")}],
        limit=4,
    )
    stop_after = {"n": 4 + 2}  # 4 choice prompts, then 2 dialogue prompts, then the server goes away

    def counting_generate(self, prompts):
        if stop_after["n"] < len(prompts):
            server.shutdown()
            server.server_close()
        stop_after["n"] -= len(prompts)
        return original(self, prompts)

    from chimed_trl.generation import OpenAIGenerator

    original = OpenAIGenerator.__call__
    monkeypatch.setattr(OpenAIGenerator, "__call__", counting_generate)
    with pytest.raises(UserError, match=r"dialogue: the API failed after 2 of 4 prompts"):
        run_evaluation(EvalArguments(**args))
    out = tmp_path / "run"
    assert (out / "tasks" / "choice.json").exists() and not (out / "metrics.json").exists()
    # the server is back (a new one on the same port); only the dialogue prompts are asked again
    server = ThreadingHTTPServer(("127.0.0.1", port), _ChatHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    asked: list[int] = []
    monkeypatch.setattr(OpenAIGenerator, "__call__", lambda self, p: asked.append(len(p)) or original(self, p))
    try:
        result = run_evaluation(EvalArguments(**args))
    finally:
        server.shutdown()
    assert sum(asked) == 4 and result["tasks"]["choice"]["total"] == 4 and (out / "metrics.json").exists()


# Bug caught (issue 16): evaluation's API mode with nothing listening failed at the first request, as an
# openai traceback. It is one line naming the URL and the model, before the output dir is claimed.
def test_api_mode_server_is_checked_first(tmp_path):
    import socket

    from chimed_trl.errors import UserError

    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    choice = [{"formatter": "choice", "path": str(SAMPLES / "choice_test.jsonl")}]
    try:
        with pytest.raises(UserError) as e:
            run_evaluation(EvalArguments(output_dir=str(tmp_path / "e"), api_base_url=url, api_model="m",
                                         tasks=["choice"], choice_datasets=choice))  # fmt: skip
    finally:
        dead.close()
    assert url in str(e.value) and "'m'" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "e").exists()
