"""recipes/evaluate.py end to end on the tiny model, and the OpenAI-compatible client against a real local server."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.evaluation.harness import run_evaluation

from ..conftest import REPO


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
    assert report["tasks"]["choice"]["total"] == 20 and report["tasks"]["choice"]["k_shot"] == 2
    assert "BLEU-1 (paper_compat)" in report["tasks"]["dialogue"]["scores"]
    assert (
        report["tasks"]["scales"]["MICA"]["items"] == 16 and "position_agreement" in report["tasks"]["scales"]["CAMI"]
    )
    for chart in report["charts"]:
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "## Multiple-choice QA" in md and "## Attitude scales" in md
    details = json.loads((out / "details.json").read_text())
    assert len(details["choice"]["predictions"]) == 20


class _ChatHandler(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

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
    finally:
        server.shutdown()
    assert result["settings"]["choice_mode"] == "generate"
    assert result["tasks"]["choice"]["total"] == 5
    assert result["tasks"]["dialogue"]["scores"]["BLEU-1"] >= 0
    assert result["tasks"]["scales"]["MICA"]["most_chosen"] == "A" and result["tasks"]["scales"]["MICA"]["degenerate"]
    assert _ChatHandler.seen_auth and all(a == "Bearer sk-secret-123" for a in _ChatHandler.seen_auth)
    for path in tmp_path.iterdir():  # the key never reaches saved outputs
        assert "sk-secret-123" not in path.read_bytes().decode("utf-8", "ignore")


def test_eval_arguments_errors():
    with pytest.raises(ValueError, match="unknown tasks"):
        EvalArguments(model_name_or_path="x", tasks=["choice", "poetry"])
    with pytest.raises(ValueError, match="give model_name_or_path"):
        EvalArguments()


def test_lora_adapter_on_its_base(tiny_model_dir, tmp_path):
    """`adapter_path` loads a PEFT adapter on the base; a zero-init LoRA leaves predictions unchanged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    choice = [{"formatter": "choice", "path": str(REPO / "chimed_trl/data/samples/choice_test.jsonl")}]
    common = dict(model_name_or_path=str(tiny_model_dir), tasks=["choice"], choice_datasets=choice, limit=10)
    plain = run_evaluation(EvalArguments(output_dir=str(tmp_path / "plain"), **common))
    with_adapter = run_evaluation(
        EvalArguments(output_dir=str(tmp_path / "lora"), adapter_path=str(adapter), **common)
    )
    assert with_adapter["settings"]["adapter"] == str(adapter)
    assert with_adapter["tasks"]["choice"]["predictions"] == plain["tasks"]["choice"]["predictions"]
