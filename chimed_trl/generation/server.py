"""Launch an OpenAI-compatible generation server (``vllm serve``, ``transformers serve``), wait, stop.

Rejection sampling changes the policy every round, so the trainer can start a server on each
round's checkpoint and stop it afterwards. The command is a template with ``{model}`` and
``{port}``; readiness is ``GET /health`` (vLLM, SGLang and ``transformers serve`` all answer it).
A server that does not become ready within ``ready_timeout`` is stopped and reported with its
command and last log lines.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from chimed_trl.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchedServer:
    """``with LaunchedServer("vllm serve {model} --port {port}", model=path) as server: server.base_url``"""

    def __init__(
        self, command: str, model: str, port: int | None = None, ready_timeout: float = 600.0, host="127.0.0.1"
    ):
        self.port = port or free_port()
        self.command = command.format(model=model, port=self.port)
        self.model, self.ready_timeout, self.host = model, ready_timeout, host
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> LaunchedServer:
        fd, log = tempfile.mkstemp(prefix="chimed-server-", suffix=".log")
        self.log_path = Path(log)
        with os.fdopen(fd, "wb") as out:
            # own process group, so stop() ends the server and any workers it spawned
            self.process = subprocess.Popen(
                shlex.split(self.command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before it was ready")
            if self.healthy():
                return self
            time.sleep(0.5)
        self._fail(f"was not ready within ready_timeout={self.ready_timeout:g}s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _fail(self, why: str):
        tail = self.log_tail()
        self.stop()
        raise UserError(f"generation server `{self.command}` {why}; last log lines:\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> LaunchedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
