"""A real OpenAI-compatible HTTP server (stdlib only) for tests, in process or as its own process.

``POST /v1/chat/completions`` answers ``"<user text>#<seed>#<k>"`` for ``k`` in ``range(n)`` (``n`` honoured
or not), after a fixed ``latency``; ``finish_reason`` is ``length`` when the user text contains ``LONG``.
A user text containing ``FAIL`` gets HTTP 400 (not retried) at once, before the others answer. ``GET /v1/models`` lists ``model``. It counts
requests and the most requests in flight at once. As a process (``python openai_stub.py --die_after K``) it
prints its port on the first line (bound to port 0 first: no free-port race) and SIGKILLs itself on its K-th
request, before answering it: a replica dying mid-round. Launched through a command template
(``--port {port} --record DIR/{port}.json``) it binds that port and records its pid, port and
``CUDA_VISIBLE_DEVICES`` (and one line per request in ``DIR/{port}.json.requests``); ``--fail_on_devices G``
makes the replica given devices ``G`` exit with code 3 after ``--fail_after`` seconds instead of serving.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(self, latency=0.0, honours_n=True, model="m", die_after=None, models_status=200, port=0, record=None):
        self.latency, self.honours_n, self.model, self.die_after = latency, honours_n, model, die_after
        self.models_status = models_status
        self.fail_marker = "FAIL"  # a user text holding it gets HTTP 400; None: the server has recovered
        self.requests: list[dict] = []
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if stub.models_status != 200:
                    return self.reply(stub.models_status, {"error": {"message": "scripted"}})
                self.reply(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                    count = len(stub.requests)
                    if record:
                        with open(f"{record}.requests", "a") as f:
                            f.write("1\n")
                    stub.in_flight += 1
                    stub.peak = max(stub.peak, stub.in_flight)
                if stub.die_after is not None and count >= stub.die_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                user = body["messages"][-1]["content"]
                failing = stub.fail_marker and stub.fail_marker in user
                time.sleep(0 if failing else stub.latency)  # the failure comes back first: others are in flight
                with stub.lock:
                    stub.in_flight -= 1
                if failing:
                    return self.reply(400, {"error": {"message": "scripted bad request"}})
                n = body.get("n", 1) if stub.honours_n else 1
                reason = "length" if "LONG" in user else "stop"
                choices = [
                    {"index": k, "finish_reason": reason,
                     "message": {"role": "assistant", "content": f"{user}#{body.get('seed')}#{k}"}}
                    for k in range(n)
                ]  # fmt: skip
                self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": choices})  # fmt: skip

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(prompt_text: str, seed: int, k: int = 0) -> str:
    """What the stub answers: the independent expectation of a test."""
    return f"{prompt_text}#{seed}#{k}"


class StubProcess:
    """The stub in its own process (a replica that can really die); ``base_url`` once it has printed its port."""

    def __init__(self, *args: str):
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self.port = int(self.process.stdout.readline())
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--die_after", type=int, default=None)
    parser.add_argument("--honours_n", type=int, default=1)
    parser.add_argument("--model", default="m")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", default=None)
    parser.add_argument("--fail_on_devices", default=None)
    parser.add_argument("--fail_after", type=float, default=0.0)
    options = parser.parse_args()
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if options.fail_on_devices is not None and devices == options.fail_on_devices:
        time.sleep(options.fail_after)
        sys.exit(3)
    server = StubServer(
        options.latency, bool(options.honours_n), options.model, options.die_after, port=options.port,
        record=options.record,
    )  # fmt: skip
    if options.record:
        with open(options.record, "w") as f:
            json.dump({"pid": os.getpid(), "port": server.port, "devices": devices}, f)
    print(server.port, flush=True)
    server.httpd.serve_forever()
