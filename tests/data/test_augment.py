"""The augmentation tool against real HTTP servers on 127.0.0.1: ``transformers serve`` with the tiny model
(session fixture ``tiny_server``) and a scripted stdlib ``http.server`` speaking the OpenAI chat API (for
failures, retries and answers chosen by hand). No mocks: every request goes through the ``openai`` client."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chimed_trl.data.augment import insert_answers
from chimed_trl.data.records import DataError
from chimed_trl.errors import UserError
from chimed_trl.stages.augment import AugmentArguments, ResponderConfig, augment_rankings

KEY_ENV, KEY = "CHIMED_TEST_AUGMENT_KEY", "sk-test-3f9a7c1e-never-written"


# ---------------------------------------------------------------- a scripted OpenAI-compatible server
class ScriptedServer:
    """Answers ``POST /v1/chat/completions``: first the queued error statuses, then ``answer(model, question)``."""

    def __init__(self, answer, failures=(), models=("A", "B", "Z")):
        self.answer, self.failures, self.requests, self.models = answer, list(failures), [], list(models)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the pre-flight's model list
                if self.path != "/v1/models":
                    return self._send(404, {"error": {"message": "not found"}})
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append((body["model"], question, self.headers.get("Authorization")))
                    status = server.failures.pop(0) if server.failures else 200
                if status != 200:
                    payload = {"error": {"message": f"scripted {status}", "type": "server_error"}}
                    return self._send(status, payload, {"Retry-After": "0"} if status == 429 else {})
                text = server.answer(body["model"], question)
                usage = {"prompt_tokens": len(question), "completion_tokens": len(text)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                message = {"role": "assistant", "content": text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                payload = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"]}
                self._send(200, payload | {"choices": [choice], "usage": usage})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_pairs(path, n):
    rows = [
        {"question": f"问题{i}：头痛怎么办？", "response_chosen": f"好答案{i}", "response_rejected": f"差答案{i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows


def api(name, base_url, **kw):
    return {"name": name, "base_url": base_url, "api_model": name, "api_key_env": KEY_ENV, **kw}


def args_for(tmp_path, pairs, responders, **kw):
    return AugmentArguments(
        output_dir=str(tmp_path / "out"),
        datasets=[{"formatter": "cmd_reward", "path": str(pairs)}],
        responders=responders,
        input_sources=["human_chosen", "human_rejected"],
        **kw,
    )


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- insertion (pure)
def test_insert_answers_positions_ranks_and_ties():
    # bugs caught: an answer inserted at the wrong index, sources shifted against responses, ranks
    # renumbered so input ties are lost, a negative position counted from the wrong end
    record = {"prompt": [{"role": "user", "content": "q"}], "responses": ["a", "b", "c"], "ranks": [0, 1, 1]}
    answers = [
        (ResponderConfig("top", position=0), "T"),
        (ResponderConfig("mid1"), "M1"),  # default position 1: right after the best input
        (ResponderConfig("mid2", position=1), "M2"),  # same slot: configured order kept
        (ResponderConfig("last", position=3), "L"),  # K: below everything
    ]
    out = insert_answers(record, answers, ["x", "y", "z"], "here")
    assert out["responses"] == ["T", "a", "M1", "M2", "b", "c", "L"]
    assert out["sources"] == ["top", "x", "mid1", "mid2", "y", "z", "last"]
    assert out["ranks"] == [0, 1, 2, 3, 4, 4, 5]  # b and c stay tied
    pair = {"prompt": record["prompt"], "responses": ["c", "r"]}
    neg = insert_answers(pair, [(ResponderConfig("g", position=-1), "G")], ["c", "r"], "here")
    assert neg["responses"] == ["c", "G", "r"] and neg["ranks"] == [0, 1, 2]
    with pytest.raises(DataError, match="here.*splits tied responses 1 and 2"):
        insert_answers(record, [(ResponderConfig("s", position=2), "S")], ["x", "y", "z"], "here")
    with pytest.raises(DataError, match="here.*'far'.*outside"):
        insert_answers(record, [(ResponderConfig("far", position=4), "F")], ["x", "y", "z"], "here")


# ---------------------------------------------------------------- the live transformers server
def test_live_server_builds_k4_lists_at_the_right_positions_without_leaking_the_key(
    tiny_server, tiny_model_dir, tmp_path, monkeypatch
):
    # bugs caught: answers swapped between responders or positions, a wrong `sources` label, the seed not
    # reaching the server, the key written to resolved_config/metrics/ranked.jsonl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv(KEY_ENV, KEY)
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    sampled = {"generation_config": json.dumps({"do_sample": True})}  # transformers serve samples only when asked
    common = dict(base_url=tiny_server.base_url, api_model=tiny_server.model, api_key_env=KEY_ENV, extra_body=sampled)
    responders = [
        {"name": "gpt-4", "max_new_tokens": 10, "temperature": 1.0, "seed": 11, "position": 1, **common},
        {"name": "gpt-3.5-turbo", "max_new_tokens": 5, "temperature": 1.0, "seed": 22, "position": -1, **common},
    ]
    # one request at a time: the server seeds torch globally, so parallel requests would interleave draws
    metrics = augment_rankings(args_for(tmp_path, tmp_path / "pairs.jsonl", responders, max_concurrency=1))

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)

    def reference(question, chosen, rejected, seed, max_new_tokens):  # plain transformers, seeded like the server
        rid = json.dumps(
            [[{"role": "user", "content": question}], [chosen, rejected]], ensure_ascii=False, sort_keys=True
        )
        rid = hashlib.sha256(rid.encode()).hexdigest()[:20]
        ids = tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        torch.manual_seed(seed + int(rid[:8], 16) % 2**31)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0)
        new = out[0, ids["input_ids"].shape[1] :]
        return tok.decode(new, skip_special_tokens=True).strip(), rid, len(new)

    records = lines(tmp_path / "out" / "ranked.jsonl")
    assert len(records) == 3
    tokens = 0
    for row, record in zip(pairs, records):
        q, c, r = row["question"], row["response_chosen"], row["response_rejected"]
        strong, rid, n_strong = reference(q, c, r, 11, 10)
        weak, _, n_weak = reference(q, c, r, 22, 5)
        assert record["id"] == rid
        assert record["responses"] == [c, strong, weak, r]
        assert record["sources"] == ["human_chosen", "gpt-4", "gpt-3.5-turbo", "human_rejected"]
        assert record["ranks"] == [0, 1, 2, 3]
        tokens += n_strong + n_weak  # the server's usage counts generated tokens, as generate() returns them
    assert metrics["tokens"]["completion"] == tokens
    assert metrics["responders"]["gpt-4"]["kept"] == 3 and metrics["file"]["list_sizes"] == {"4": 3}
    for path in (tmp_path / "out").iterdir():
        assert KEY not in path.read_text(encoding="utf-8"), path.name


def test_greedy_tiny_server_answers_are_counted_empty(tiny_server, tmp_path):
    # bug caught: an empty answer silently kept in the list (the random-init model answers greedily with
    # blank lines, which strip to ""), or counted once per batch instead of once per prompt
    write_pairs(tmp_path / "pairs.jsonl", 3)
    responders = [
        {"name": "greedy", "base_url": tiny_server.base_url, "api_model": tiny_server.model, "max_new_tokens": 4}
    ]
    metrics = augment_rankings(
        args_for(tmp_path, tmp_path / "pairs.jsonl", responders, empty_answer_policy="skip_responder", batch_size=2)
    )
    records = lines(tmp_path / "out" / "ranked.jsonl")
    assert [r["sources"] for r in records] == [["human_chosen", "human_rejected"]] * 3
    assert (metrics["responders"]["greedy"]["empty"], metrics["responders"]["greedy"]["kept"]) == (3, 0)


# ---------------------------------------------------------------- policies, by hand count
def scripted_answers(model, question):
    i = int(question[2 : question.index("：")])
    if model == "A":
        return {0: "", 1: f"好答案{chr(0xFF10 + i)}"}.get(i, f"A说{i}")  # 1: the chosen answer, full-width digit
    return {2: "A说2", 3: "   "}.get(i, f"B说{i}")  # 2: a copy of A's answer, 3: blank


@pytest.mark.parametrize("policy", ["drop_record", "skip_responder", "error"])
def test_empty_and_duplicate_policies_match_hand_counts(tmp_path, monkeypatch, policy):
    # bugs caught: a duplicate of the chosen answer (after whitespace normalisation) or of another
    # responder's answer kept, an empty answer kept, a dropped record written anyway, miscounts
    monkeypatch.setenv(KEY_ENV, KEY)
    write_pairs(tmp_path / "pairs.jsonl", 6)
    with ScriptedServer(scripted_answers) as server:
        args = args_for(
            tmp_path,
            tmp_path / "pairs.jsonl",
            [api("A", server.base_url), api("B", server.base_url)],
            empty_answer_policy=policy,
            duplicate_answer_policy=policy,
            batch_size=4,
        )
        if policy == "error":
            with pytest.raises(UserError, match=r"record 1 \(prompt 1/6.*'A' gave an empty answer"):
                augment_rankings(args)
            return
        metrics = augment_rankings(args)
    assert {auth for _, _, auth in server.requests} == {f"Bearer {KEY}"}  # the key reached the server...
    for path in (tmp_path / "out").iterdir():
        assert KEY not in path.read_text(encoding="utf-8")  # ...and nowhere else
    a, b = metrics["responders"]["A"], metrics["responders"]["B"]
    assert (a["requested"], a["empty"], a["duplicate"], b["empty"], b["duplicate"]) == (6, 1, 1, 1, 1)
    records = {r["prompt"][0]["content"][:3]: r for r in lines(tmp_path / "out" / "ranked.jsonl")}
    if policy == "drop_record":
        assert sorted(records) == ["问题4", "问题5"] and (a["kept"], b["kept"]) == (2, 2)
        dropped = lines(tmp_path / "out" / "dropped.jsonl")
        assert [(d["where"][-8:], d["responder"], d["reason"]) for d in dropped] == [
            ("record 1", "A", "empty answer"),
            ("record 2", "A", "duplicate answer"),
            ("record 3", "B", "duplicate answer"),
            ("record 4", "B", "empty answer"),
        ]
    else:
        assert records["问题0"]["responses"] == ["好答案0", "B说0", "差答案0"]
        assert records["问题1"]["sources"] == ["human_chosen", "B", "human_rejected"]
        assert records["问题2"]["responses"] == ["好答案2", "A说2", "差答案2"]
        assert records["问题3"]["sources"] == ["human_chosen", "A", "human_rejected"]
        assert records["问题5"]["responses"] == ["好答案5", "A说5", "B说5", "差答案5"]
        assert (a["kept"], b["kept"]) == (4, 4) and metrics["file"]["list_sizes"] == {"3": 4, "4": 2}


# ---------------------------------------------------------------- retries
def test_retries_on_5xx_and_429_are_counted_and_bounded(tmp_path, monkeypatch):
    # bugs caught: no retry on 429/5xx, retries not counted, an unbounded loop, a 400 retried
    monkeypatch.setenv(KEY_ENV, KEY)
    write_pairs(tmp_path / "pairs.jsonl", 1)
    with ScriptedServer(lambda m, q: "fine", failures=[500, 429, 503]) as server:
        metrics = augment_rankings(
            args_for(tmp_path, tmp_path / "pairs.jsonl", [api("A", server.base_url)], max_retries=3)
        )
    assert len(server.requests) == 4 and metrics["retries"] == 3
    assert lines(tmp_path / "out" / "ranked.jsonl")[0]["responses"] == ["好答案0", "fine", "差答案0"]

    with ScriptedServer(lambda m, q: "fine", failures=[502] * 50) as server:
        with pytest.raises(UserError, match=r"prompt 1/1, .*'A' failed: InternalServerError.*after 2 retries.*rerun"):
            augment_rankings(
                args_for(tmp_path / "b", tmp_path / "pairs.jsonl", [api("A", server.base_url)], max_retries=2)
            )
    assert len(server.requests) == 3  # 1 + max_retries, then a clear error
    assert not (tmp_path / "b" / "out" / "metrics.json").exists()

    with ScriptedServer(lambda m, q: "fine", failures=[400]) as server:
        with pytest.raises(UserError, match="BadRequestError"):
            augment_rankings(
                args_for(tmp_path / "c", tmp_path / "pairs.jsonl", [api("A", server.base_url)], max_retries=5)
            )
    assert len(server.requests) == 1  # a client error is not retried


# ---------------------------------------------------------------- configuration and output-dir safety
def test_config_mistakes_are_one_clear_line(tmp_path, monkeypatch):
    # bugs caught: a key accepted in the config, a missing env variable discovered mid-run, a foreign or
    # finished directory overwritten, CLI JSON responders parsed differently from YAML ones
    monkeypatch.delenv(KEY_ENV, raising=False)
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 1)
    with pytest.raises(UserError, match=r"responders\[0\]: never put a key"):
        args_for(tmp_path, pairs, [{"name": "x", "base_url": "http://h/v1", "api_model": "m", "api_key": "sk"}])
    with pytest.raises(UserError, match=r"responders\[1\]: unknown keys \['temprature'\]"):
        args_for(tmp_path, pairs, [{"name": "x", "model": "m"}, {"name": "y", "model": "m", "temprature": 1}])
    with pytest.raises(UserError, match=f"environment variable {KEY_ENV} is not set"):
        augment_rankings(args_for(tmp_path, pairs, [api("A", "http://127.0.0.1:9/v1")]))
    as_json = args_for(tmp_path, pairs, [json.dumps([api("A", "u"), {"name": "b", "model": "m", "position": 2}])])
    as_yaml = args_for(tmp_path, pairs, [api("A", "u"), {"name": "b", "model": "m", "position": 2}])
    assert as_json.responders == as_yaml.responders
    with pytest.raises(UserError, match="responder_model: expected NAME=PATH"):
        args_for(tmp_path, pairs, [api("A", "u")], responder_model=["nobody=/x"])

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match="holds no run of this package .*found thesis.tex"):
        augment_rankings(
            AugmentArguments(
                str(foreign), [{"formatter": "cmd_reward", "path": str(pairs)}], [{"name": "b", "model": "m"}]
            )
        )
    assert (foreign / "thesis.tex").read_text() == "mine"

    monkeypatch.setenv(KEY_ENV, KEY)
    with ScriptedServer(lambda m, q: "fine") as server:
        first = augment_rankings(args_for(tmp_path, pairs, [api("A", server.base_url)]))
        asked = len(server.requests)
        # a finished run with the same settings is left alone: its metrics back, nothing asked again
        assert augment_rankings(args_for(tmp_path, pairs, [api("A", server.base_url)])) == first
        assert len(server.requests) == asked
        with pytest.raises(UserError, match="differ from the ones that wrote"):
            (tmp_path / "out" / "metrics.json").unlink()
            augment_rankings(args_for(tmp_path, pairs, [api("Z", server.base_url)]))


# Catches: `--datasets '[...]'` on the command line refused by argparse ("invalid Any value") or parsed differently
# from the YAML list; responder fields of the wrong type surfacing later as an AttributeError (getattr(torch, dtype))
# or a TypeError from a comparison, instead of one line naming responders[i].field.
def test_cli_datasets_json_and_typed_responder_fields(tmp_path):
    from chimed_trl.cli import parse_recipe_args
    from chimed_trl.data.sources import source_from_config

    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 1)
    source = {"formatter": "cmd_reward", "path": str(pairs)}
    responders = json.dumps([{"name": "a", "model": "m"}])
    argv = ["--output_dir", str(tmp_path / "o"), "--datasets", json.dumps([source]), "--responders", responders]
    (parsed,) = parse_recipe_args((AugmentArguments,), argv)
    assert parsed.datasets == [source_from_config(source, "datasets[0]")]
    bad = {
        "dtype": ("float64x", r"responders\[1\]\.dtype: expected one of float32, bfloat16, float16, got 'float64x'"),
        "max_new_tokens": ("ten", r"responders\[1\]\.max_new_tokens: expected an integer, got 'ten'"),
        "temperature": ("hot", r"responders\[1\]\.temperature: expected a number, got 'hot'"),
        "batch_size": (True, r"responders\[1\]\.batch_size: expected an integer, got True"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(UserError, match=message):
            args_for(tmp_path, pairs, [{"name": "a", "model": "m"}, {"name": "b", "model": "m", key: value}])


# Bugs caught (issue 16): an endpoint with nothing listening was a 122-line httpx/openai traceback, found only
# after the local responders had loaded; a wrong api_model was found at the first request. Both are one line
# naming the responder, the URL and the model, before any model loads or the output dir is claimed.
def test_endpoints_are_checked_before_anything_loads(tmp_path, monkeypatch, tiny_model_dir):
    import socket

    monkeypatch.setenv(KEY_ENV, KEY)
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 2)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused while the test holds it
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    local = {"name": "local", "model": str(tiny_model_dir)}
    try:
        with pytest.raises(UserError) as e:
            augment_rankings(args_for(tmp_path, pairs, [local, api("A", dead_url)]))
    finally:
        dead.close()
    message = str(e.value)
    assert message.startswith("responder 'A': ") and dead_url in message and "'A'" in message
    assert "\n" not in message and KEY not in message and not (tmp_path / "out").exists()
    with ScriptedServer(lambda m, q: "fine", models=("B",)) as server:
        with pytest.raises(UserError, match=r"responder 'A': .*serves \['B'\], not 'A'"):
            augment_rankings(args_for(tmp_path, pairs, [api("A", server.base_url)]))
        assert server.requests == [] and not (tmp_path / "out").exists()
