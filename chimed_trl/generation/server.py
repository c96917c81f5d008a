"""Launch an OpenAI-compatible generation server (``vllm serve``, ``transformers serve``), wait, stop.

Rejection sampling changes the policy every round, so the trainer can start a server on each
round's checkpoint and stop it afterwards. The command is a template with ``{model}`` and
``{port}``; readiness is ``GET /health`` (vLLM, SGLang and ``transformers serve`` all answer it).
A server that exits early or does not become ready within ``ready_timeout`` is stopped and reported
with its command and last log lines. The server runs in its own process group, and stopping it
(SIGTERM, then SIGKILL after ``stop_timeout``) ends the whole group: vLLM's engine and its
data/tensor-parallel workers, not only the front process.

A recipe config names the command as ``generation_server: {command: "vllm serve {model} --port {port}
...", ready_timeout: 900, replicas: K, gpus_per_replica: G}``, checked in one place
(:meth:`GenerationServerConfig.from_dict`). :func:`launch_for_model` turns it into one server for one
checkpoint; :class:`LaunchedReplicas` starts K servers (each its own port and ``CUDA_VISIBLE_DEVICES`` group of
G devices, tensor parallel inside each through the command), waits for all and stops all.
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
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from pathlib import Path
from string import Formatter

from chimed_trl.errors import UserError

READY_TIMEOUT = 900.0  # seconds: a 13B vLLM engine loads and captures its CUDA graphs in minutes
PORT_TAKEN = ("Address already in use", "address already in use", "EADDRINUSE")


class PortTaken(Exception):
    """The launched server could not bind its port (another process took it after :func:`free_port`)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LaunchedServer:
    """``with LaunchedServer("vllm serve {model} --port {port}", model=path) as server: server.base_url``"""

    def __init__(
        self,
        command: str,
        model: str,
        port: int | None = None,
        ready_timeout: float = READY_TIMEOUT,
        host="127.0.0.1",
        stop_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ):
        check_command_template(command)
        self.template, self.chosen_port = command, port is None
        self.port = port or free_port()
        self.command = command.format(model=model, port=self.port)
        self.model, self.ready_timeout, self.host, self.stop_timeout = model, ready_timeout, host, stop_timeout
        self.env = {**os.environ, **env} if env else None  # e.g. this replica's CUDA_VISIBLE_DEVICES
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, attempts: int = 3) -> LaunchedServer:
        """Start the server and wait until ``/health`` answers. A port this class chose is free when chosen but
        can be taken by another process before the server binds it: that start is retried on a new port."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except PortTaken:
                if attempt == attempts - 1 or not self.chosen_port:
                    self._fail(f"could not bind port {self.port} (address already in use)")
                self.use_port(free_port())

    def use_port(self, port: int) -> None:
        self.port = port
        self.command = self.template.format(model=self.model, port=port)

    def _start_once(self) -> LaunchedServer:
        fd, log = tempfile.mkstemp(prefix="chimed-server-", suffix=".log")
        self.log_path = Path(log)
        with os.fdopen(fd, "wb") as out:
            # own process group, so stop() ends the server and any workers it spawned
            process = self.process = subprocess.Popen(
                shlex.split(self.command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:  # `process`: another thread's stop() may clear self.process
                returncode = process.returncode
                if any(marker in self.log_tail(50) for marker in PORT_TAKEN):
                    self.stop()
                    raise PortTaken(self.port)
                self._fail(f"exited with code {returncode} before it was ready")
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
        raise UserError(f"generation server `{self.command}` {why} (log: {self.log_path}); last log lines:\n{tail}")

    def stop(self) -> None:
        """End the server's whole process group (its workers too), even when the front process already exited."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        self._signal_group(signal.SIGKILL)  # workers that outlived their parent's SIGTERM
        self.process = None

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:  # the group is already gone
            pass

    def __enter__(self) -> LaunchedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def check_command_template(command: str, key: str = "command") -> None:
    """A launch command must place ``{model}`` and ``{port}`` and nothing else in braces."""
    try:
        names = {name for _, name, _, _ in Formatter().parse(command) if name is not None}
    except ValueError as err:
        raise UserError(f"generation_server.{key} {command!r}: {err}") from None
    if names != {"model", "port"}:
        raise UserError(
            f"generation_server.{key} {command!r} must contain the placeholders {{model}} and {{port}} and no "
            f"others (found {sorted(names)})"
        )


@dataclass
class GenerationServerConfig:
    """The ``generation_server:`` block of a recipe config: how to serve each round's checkpoint."""

    command: str
    ready_timeout: float = READY_TIMEOUT
    host: str = "127.0.0.1"
    replicas: int = 1  # servers started side by side (data parallel); requests go to the least-loaded one
    gpus_per_replica: int | None = None  # devices per server (CUDA_VISIBLE_DEVICES); None: left alone if 1 replica

    @classmethod
    def from_dict(cls, raw: Mapping | str | GenerationServerConfig) -> GenerationServerConfig:
        """The one check of a ``generation_server`` block (a command string alone is accepted)."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, str):
            raw = {"command": raw}
        if not isinstance(raw, Mapping):
            raise UserError(f"generation_server must be a mapping with `command` and `ready_timeout`, got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"generation_server.{unknown[0]}: unknown key (expected {sorted(known)})")
        if not isinstance(raw.get("command"), str):
            raise UserError("generation_server.command: a command template with {model} and {port} is required")
        check_command_template(raw["command"])
        config = cls(**raw)
        if not (isinstance(config.ready_timeout, (int, float)) and config.ready_timeout > 0):
            raise UserError(f"generation_server.ready_timeout={config.ready_timeout!r} must be a positive number")
        for key in ("replicas", "gpus_per_replica"):
            value = getattr(config, key)
            if not (value is None and key == "gpus_per_replica") and not (isinstance(value, int) and value >= 1):
                raise UserError(f"generation_server.{key}={value!r} must be an integer >= 1")
        return config

    def device_groups(self, visible: str | None) -> list[str | None]:
        """Each replica's ``CUDA_VISIBLE_DEVICES``: consecutive groups of ``gpus_per_replica`` devices taken from
        ``visible`` (the parent's list) or ``0..replicas*gpus_per_replica-1``; ``[None]`` (inherit) for one
        replica without ``gpus_per_replica``."""
        if self.replicas == 1 and self.gpus_per_replica is None:
            return [None]
        per, needed = self.gpus_per_replica or 1, self.replicas * (self.gpus_per_replica or 1)
        devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(needed)]
        if len(devices) < needed:
            raise UserError(
                f"generation_server: replicas={self.replicas} x gpus_per_replica={per} needs {needed} devices, "
                f"CUDA_VISIBLE_DEVICES={visible!r} lists {len(devices)}"
            )
        return [",".join(devices[i * per : (i + 1) * per]) for i in range(self.replicas)]


def launch_for_model(
    command: str | Mapping | GenerationServerConfig, model_path: str | os.PathLike, ready_timeout: float | None = None
) -> LaunchedServer:
    """A not-yet-started server for one checkpoint; use it as a context manager (start, wait, stop).

    ``command`` is the template string, the ``generation_server`` mapping or its parsed config;
    ``ready_timeout`` overrides the config's.

    Example::

        with launch_for_model("vllm serve {model} --port {port}", "out/round_1/policy", 900) as server:
            texts = OpenAIGenerator(server.base_url, server.model, honours_n=True).generate(prompts, sampling)
    """
    config = GenerationServerConfig.from_dict(command)
    timeout = ready_timeout if ready_timeout is not None else config.ready_timeout
    return LaunchedServer(config.command, model=str(model_path), ready_timeout=timeout, host=config.host)


class LaunchedReplicas:
    """K servers of one checkpoint, each on its own port and device group, started together and stopped together.

    Example::

        config = GenerationServerConfig.from_dict({"command": "vllm serve {model} --port {port} -tp 2",
                                                   "replicas": 4, "gpus_per_replica": 2})
        with LaunchedReplicas(config, "out/round_1/policy") as servers:
            OpenAIGenerator(servers.base_urls, servers.model, honours_n=True).generate(prompts, sampling)
    """

    def __init__(self, config: Mapping | str | GenerationServerConfig, model: str | os.PathLike):
        config = GenerationServerConfig.from_dict(config)
        groups = config.device_groups(os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.model = str(model)
        self.servers = []
        for group in groups:
            server = LaunchedServer(
                config.command, self.model, ready_timeout=config.ready_timeout, host=config.host,
                env={"CUDA_VISIBLE_DEVICES": group} if group is not None else None,
            )  # fmt: skip
            while server.port in {s.port for s in self.servers}:  # free_port may hand out a port twice
                server.use_port(free_port())
            self.servers.append(server)

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    def start(self) -> LaunchedReplicas:
        """Start every server at once and wait for all; if one fails, stop the others and raise its one line."""
        with ThreadPoolExecutor(len(self.servers)) as pool:
            futures = [pool.submit(s.start) for s in self.servers]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f.exception() for f in done if f.exception() is not None), None)
            if failed is not None:
                self.stop()  # the others stop waiting: their servers are gone
        if failed is None:
            return self
        self.stop()  # again, once every thread is done: one may have started its server after the first stop
        if isinstance(failed, UserError):
            raise UserError(f"a generation server replica failed to start, all {len(self.servers)} stopped: {failed}")
        raise failed

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> LaunchedReplicas:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
