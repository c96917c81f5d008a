"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1: the ``tiny_server`` fixture
(``transformers serve``) and a small stdlib ``http.server`` whose failures and delays the test scripts."""

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from chimed_trl.generation import OpenAIGenerator, SamplingParams


class ScriptedServer:
    """Answers chat completions with ``"<user text>#<seed>"``; the first ``failures`` requests get ``status``."""

    def __init__(self, failures=0, status=500, honours_n=False, max_delay=0.0, headers=None):
        self.failures, self.status, self.honours_n, self.max_delay = failures, status, honours_n, max_delay
        self.headers = headers or {}
        self.requests, self.clients, self.auth = [], set(), set()
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so a reused client reuses its connections

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.clients.add(self.client_address)
                    server.auth.add(self.headers.get("Authorization"))
                    failing = len(server.requests) <= server.failures
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                time.sleep(random.uniform(0, server.max_delay))  # replies come back out of order
                with server.lock:
                    server.in_flight -= 1
                if failing:
                    return self.reply(server.status, {"error": {"message": "scripted failure"}}, server.headers)
                user = body["messages"][-1]["content"]
                count = body.get("n", 1) if server.honours_n else 1
                choices = [
                    {
                        "index": k,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"{user}#{body.get('seed')}#{k}"},
                    }
                    for k in range(count)
                ]
                self.reply(
                    200,
                    {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices},
                )

            def reply(self, status, payload, headers=()):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in dict(headers).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def generator(server, **kwargs):
    return OpenAIGenerator(server.base_url, "m", show_progress=False, **kwargs)


def test_retries_are_bounded_and_back_off():
    # bugs caught: retrying forever, not retrying a 5xx, retrying with no pause between attempts
    with ScriptedServer(failures=10**6, status=500) as server:
        start = time.monotonic()
        with pytest.raises(openai.InternalServerError) as err:
            generator(server, max_retries=2).generate(["q"], SamplingParams())
        elapsed = time.monotonic() - start
    assert len(server.requests) == 3  # 1 + max_retries
    assert elapsed >= 0.75 * (0.5 + 1.0)  # exponential backoff 0.5 s, 1 s (less at most 25% jitter)
    assert server.base_url in str(err.value.__notes__)


def test_rate_limited_requests_are_retried_as_often_as_configured():
    # bugs caught: a 429 surfacing as an error (or a lost answer) instead of a retry honouring Retry-After;
    # max_retries not passed to the client (it would use its own default of 2)
    with ScriptedServer(failures=2, status=429, headers={"retry-after-ms": "20"}) as server:
        got = generator(server, max_retries=3, max_concurrency=1).generate(["q"], SamplingParams())
    assert len(server.requests) == 3 and got[0][0].startswith("q#")
    with ScriptedServer(failures=10**6, status=429, headers={"retry-after-ms": "20"}) as server:
        with pytest.raises(openai.RateLimitError):
            generator(server, max_retries=1).generate(["q"], SamplingParams())
    assert len(server.requests) == 2


def test_fan_out_keeps_order_bounds_concurrency_and_reuses_one_client():
    # bugs caught: answers attached to the wrong prompt when replies come back out of order, one request
    # for n samples on a server that ignores n, the same seed on every fanned-out request (identical
    # samples), concurrency not bounded (or not used), a new client (connection) per request
    prompts = [f"p{i}" for i in range(12)]
    with ScriptedServer(max_delay=0.05) as server:
        gen = generator(server, max_concurrency=4)
        sampling = SamplingParams(n=3, temperature=1.0, seed=0)
        first = gen.generate(prompts, sampling)
        second = gen.generate(prompts, sampling)
    assert len(server.requests) == 2 * 12 * 3 and all("n" not in r for r in server.requests)
    for prompt, samples in zip(prompts, first):
        assert [s.split("#")[0] for s in samples] == [prompt] * 3
        assert len({s.split("#")[1] for s in samples}) == 3  # a distinct seed per sample
    assert first == second  # seeds derive from (seed, prompt, sample index), not from timing
    assert 1 < server.peak <= 4
    assert len(server.clients) <= 4  # kept-alive connections of one pooled client, not one per request


def test_honoured_n_sends_one_request_per_prompt():
    # bug caught: fanning out (n times the requests) on a server that samples n itself
    with ScriptedServer(honours_n=True) as server:
        got = generator(server, honours_n=True).generate(["a", "b"], SamplingParams(n=4, temperature=0.7, seed=1))
    assert [r["n"] for r in server.requests] == [4, 4]
    assert [[s.split("#")[0] for s in row] for row in got] == [["a"] * 4, ["b"] * 4]


def test_server_that_ignores_n_is_reported_when_honours_n_is_set():
    # bug caught: silently returning 1 sample where n were asked
    with ScriptedServer(honours_n=False) as server, pytest.raises(ValueError, match="honours_n: false"):
        generator(server, honours_n=True).generate(["a"], SamplingParams(n=2, temperature=1.0))


def test_key_comes_from_the_environment_and_never_shows(monkeypatch):
    # bug caught: a key read from config / left out of the request / printed in repr
    monkeypatch.setenv("CHIMED_TEST_KEY", "sk-test-secret")
    with ScriptedServer() as server:
        gen = generator(server, api_key_env="CHIMED_TEST_KEY")
        gen.generate(["a"], SamplingParams())
    assert server.auth == {"Bearer sk-test-secret"}
    assert "sk-test-secret" not in repr(gen) and "sk-test-secret" not in str(vars(gen).get("api_key_env"))


def test_transformers_serve_samples_only_through_generation_config(tiny_server):
    # bug caught: sampling parameters sent the OpenAI way to `transformers serve`, which then answers greedily
    # (every sample the same); fan-out must give n answers per prompt from a server that ignores `n`
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0)
    via_config = OpenAIGenerator(
        tiny_server.base_url, tiny_server.model, sampling_via="generation_config", show_progress=False
    )
    sampled = via_config.generate(["头痛怎么办？", "发烧"], sampling)
    assert [len(s) for s in sampled] == [3, 3]
    assert all(len(set(s)) == 3 for s in sampled)
    via_openai = OpenAIGenerator(tiny_server.base_url, tiny_server.model, sampling_via="openai", show_progress=False)
    greedy = via_openai.generate(["头痛怎么办？"], SamplingParams(max_new_tokens=8))[0][0]
    assert via_openai.generate(["头痛怎么办？"], sampling) == [[greedy] * 3]


# ----- at scale: every request in flight, n in one request, replicas, truncation, pre-flight -------------------
from chimed_trl.errors import UserError  # noqa: E402
from chimed_trl.generation import check_server  # noqa: E402

from .openai_stub import StubProcess, StubServer  # noqa: E402


def test_every_request_is_in_flight_up_to_the_bound():
    # 32 prompts x 4 samples, n in one request, a server answering after a fixed 0.3 s. Bugs caught: one
    # request at a time (the old per-prompt loop), fanning out where n is honoured, the bound not applied.
    # Only counts are asserted (requests seen in flight by the server), never a wall time.
    prompts = [f"p{i}" for i in range(32)]
    sampling = SamplingParams(n=4, temperature=1.0, seed=0)
    with StubServer(latency=0.3) as server:
        got = OpenAIGenerator(server.base_url, "m", max_concurrency=64, honours_n=True, show_progress=False).generate(
            prompts, sampling
        )
    assert len(server.requests) == 32 and {r["n"] for r in server.requests} == {4}
    assert server.peak >= 8
    assert [[s.split("#")[0] for s in row] for row in got] == [[p] * 4 for p in prompts]
    with StubServer(latency=0.05) as server:
        OpenAIGenerator(server.base_url, "m", max_concurrency=5, honours_n=True, show_progress=False).generate(
            prompts, sampling
        )
    assert 1 < server.peak <= 5


def test_finish_reason_length_marks_a_completion_truncated():
    # bug caught: an answer cut by the server's token limit passed on as complete
    with StubServer() as server:
        gen = OpenAIGenerator(server.base_url, "m", honours_n=True, show_progress=False)
        rows = gen.generate_completions(["short", "LONG one"], SamplingParams(n=2, temperature=1.0, seed=0))
    assert [[c.truncated for c in row] for row in rows] == [[False, False], [True, True]]


def test_replicas_share_the_load_and_a_dead_one_fails_over():
    # Two real server processes; the second SIGKILLs itself on its 5th request (mid-round). Every sample must
    # come back exactly once, equal to what one healthy server answers (the seeds do not depend on the replica).
    # Bugs caught: all requests sent to one replica, a dead replica's requests lost or failing the call,
    # answers duplicated or attached to the wrong prompt after failover.
    prompts = [f"q{i}" for i in range(24)]
    sampling = SamplingParams(n=2, temperature=1.0, seed=3)
    with StubServer() as healthy:
        expected = OpenAIGenerator(healthy.base_url, "m", honours_n=True, show_progress=False).generate(
            prompts, sampling
        )
    with StubProcess("--latency", "0.2") as first, StubProcess("--latency", "0.2", "--die_after", "5") as dying:
        gen = OpenAIGenerator(
            [first.base_url, dying.base_url], "m", honours_n=True, max_retries=1, max_concurrency=8,
            show_progress=False,
        )  # fmt: skip
        got = gen.generate(prompts, sampling)
        assert dying.process.wait(timeout=30) == -9  # it really died mid-round
    assert got == expected
    replicas = gen.replicas.replicas
    assert replicas[1].alive is False and replicas[1].sent >= 5 and replicas[0].sent >= len(prompts) // 2


def test_replicas_are_least_loaded_first():
    # bug caught: round-robin or first-replica dispatch that leaves one replica idle while the other queues
    with StubServer(latency=0.1) as a, StubServer(latency=0.1) as b:
        gen = OpenAIGenerator([a.base_url, b.base_url], "m", honours_n=True, max_concurrency=8, show_progress=False)
        gen.generate([f"x{i}" for i in range(16)], SamplingParams(n=1, temperature=1.0, seed=0))
    assert len(a.requests) + len(b.requests) == 16 and min(len(a.requests), len(b.requests)) >= 6
    assert a.peak <= 5 and b.peak <= 5  # 8 in flight shared by two replicas


def _refusing_socket():
    """A bound socket that does not listen: connections to it are refused while we hold it (no port race)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _silent_socket():
    """A listening socket that never answers: a client's request times out."""
    sock = _refusing_socket()
    sock.listen(8)
    return sock


def test_check_server_faults_are_one_line_naming_url_and_model():
    # bugs caught: a chained traceback (httpx -> openai) instead of one line; a long wait on a dead server;
    # a server that serves another model accepted (the run would fail request by request later)
    with _refusing_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(UserError) as err:
            check_server(url, "policy-x", timeout=2.0)
    assert url in str(err.value) and "'policy-x'" in str(err.value) and "start the server" in str(err.value)
    with _silent_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(UserError, match=r"no answer within 0\.5 s") as err:
            check_server(url, "policy-x", timeout=0.5)
    with StubServer(models_status=401) as server, pytest.raises(UserError, match="HTTP 401.*check the API key"):
        check_server(server.base_url, "m", api_key="sk-never-shown")
    with StubServer(model="served-one") as server:
        with pytest.raises(UserError, match=r"serves \['served-one'\], not 'm'") as err:
            check_server(server.base_url, "m")
        assert check_server(server.base_url, "served-one") == ["served-one"]
    for message in (str(err.value),):
        assert "\n" not in message and "sk-never-shown" not in message
