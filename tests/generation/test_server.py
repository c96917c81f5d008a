"""The launched-server path: a real ``transformers serve`` process (127.0.0.1, tiny model, CPU) and a
stdlib stand-in that forks a worker, to check readiness, failure reports and process-group stop."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from chimed_trl.errors import UserError
from chimed_trl.generation import (
    GenerationServerConfig,
    LaunchedServer,
    OpenAIGenerator,
    SamplingParams,
    launch_for_model,
)

HEALTH_SERVER = Path(__file__).with_name("health_server.py")


def test_tiny_server_answers_greedy_like_the_local_model(tiny_server, tiny_model_dir):
    # bug caught: a launcher that reports ready before /health answers, or a client that drops the reply
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chimed_trl.generation import TransformersGenerator

    remote = OpenAIGenerator(tiny_server.base_url, tiny_server.model, max_tokens=8)
    got = remote.generate(["头痛怎么办？"], SamplingParams(max_new_tokens=8))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    local = TransformersGenerator(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert got == local.generate(["头痛怎么办？"], SamplingParams(max_new_tokens=8))


def test_server_that_never_gets_ready_names_command_and_log(tmp_path):
    # bug caught: waiting forever, or an error that hides what was launched
    # sys.executable (not a bare `python`), and 5 s: a loaded 2-core CI still starts the child and prints in time
    command = f"{sys.executable} -u -c \"print('boo' + 'ting'); import time; time.sleep(60)\" {{model}} {{port}}"
    with pytest.raises(UserError, match="ready_timeout=5s") as err:
        LaunchedServer(command, model="m", ready_timeout=5).start()
    assert "booting" in str(err.value)  # from the log: the command itself only has 'boo' + 'ting'
    assert f"{sys.executable} -u -c" in str(err.value)


def test_server_that_exits_early_is_reported_at_once():
    # bug caught: polling a dead process until ready_timeout, or losing its exit code and output
    command = f"{sys.executable} -c \"import sys; print('unknown flag --x'); sys.exit(3)\" {{model}} {{port}}"
    start = time.monotonic()
    with pytest.raises(UserError, match="exited with code 3") as err:
        LaunchedServer(command, model="m", ready_timeout=60).start()
    assert time.monotonic() - start < 30 and "unknown flag --x" in str(err.value)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; only its parent has not read its status yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_launch_for_model_waits_for_health_and_stops_the_whole_process_group(tmp_path):
    # bug caught: stopping only the front process and leaving the engine's workers running
    pidfile = tmp_path / "pids"
    config = {"command": f"{sys.executable} {HEALTH_SERVER} {{model}} {{port}} {pidfile}", "ready_timeout": 60}
    with launch_for_model(config, tmp_path / "ckpt") as server:
        assert server.healthy() and server.model == str(tmp_path / "ckpt")
        front, worker = map(int, pidfile.read_text().split())
        assert alive(front) and alive(worker)
        assert f"serving {tmp_path / 'ckpt'}" in server.log_tail()
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(front) and not alive(worker)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"command": "vllm serve {model}"}, "placeholders {model} and {port}"),
        ({"command": "vllm serve {model} --port {port} --x {gpu}"}, r"found \['gpu', 'model', 'port'\]"),
        (
            {"command": "vllm serve {model} --port {port}", "ready_timout": 5},
            "generation_server.ready_timout: unknown",
        ),
        ({"command": "vllm serve {model} --port {port}", "ready_timeout": 0}, "ready_timeout=0 must be"),
        ({"ready_timeout": 5}, "generation_server.command"),
    ],
)
def test_bad_generation_server_config_is_one_clear_error(raw, message):
    # bug caught: a KeyError traceback from str.format, or a typo'd key silently ignored
    with pytest.raises(UserError, match=message):
        GenerationServerConfig.from_dict(raw)


# Bug caught (issue 16): the launcher picks a free port and releases it before the server binds it; another
# process taking it in between made the start fail (or, worse, /health answered by the other process). A start
# whose server cannot bind a port the launcher chose is retried on a new one.
def test_a_port_taken_before_the_server_binds_it_is_retried(tmp_path, monkeypatch):
    import socket

    from chimed_trl.generation import server as server_module

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])  # the first pick is taken by another process by the time the server binds it
    real_free_port = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports, None) or real_free_port())
    config = f"{sys.executable} {HEALTH_SERVER} {{model}} {{port}} {tmp_path / 'pids'}"
    try:
        with LaunchedServer(config, model="m", ready_timeout=60) as launched:
            assert launched.port != taken and launched.healthy()
            assert f":{launched.port}/" in launched.base_url
    finally:
        squatter.close()


# ----- K replicas (launch mode) ------------------------------------------------------------------------
STUB = Path(__file__).with_name("openai_stub.py")


def stub_command(record_dir, *extra: str) -> str:
    """The OpenAI stub started through the template; it records its pid, port and CUDA_VISIBLE_DEVICES."""
    return (
        f"{sys.executable} {STUB} --model {{model}} --port {{port}} --record {record_dir}/{{port}}.json "
        + " ".join(extra)
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(
    "parent, groups",
    [("4,5,6,7,8,9", ["4,5", "6,7", "8,9"]), (None, ["0,1", "2,3", "4,5"])],
)
def test_replicas_get_their_own_port_and_device_group_and_all_stop(parent, groups, tmp_path, monkeypatch):
    """Three replicas of two devices each, from the parent's CUDA_VISIBLE_DEVICES or from 0..5.

    Bugs caught: two replicas on one port, every replica on all devices (or overlapping groups), groups not
    taken from the parent's list, a replica left running after stop.
    """
    from chimed_trl.generation import LaunchedReplicas

    if parent is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", parent)
    config = {"command": stub_command(tmp_path), "replicas": 3, "gpus_per_replica": 2, "ready_timeout": 60}
    with LaunchedReplicas(config, tmp_path / "ckpt") as servers:
        ports = [s.port for s in servers.servers]
        assert len(set(ports)) == 3 and servers.base_urls == [f"http://127.0.0.1:{p}/v1" for p in ports]
        seen = [json.loads((tmp_path / f"{p}.json").read_text()) for p in ports]
        assert [x["devices"] for x in seen] == groups and [x["port"] for x in seen] == ports
        assert all(s.healthy() for s in servers.servers)
    assert all(gone(x["pid"]) for x in seen) and not any(s.healthy() for s in servers.servers)


def test_a_replica_that_fails_to_start_stops_the_others_in_one_line(tmp_path, monkeypatch):
    """The replica on devices 2,3 exits after the others are up: all are stopped, one line names the failure.

    Bugs caught: the healthy replicas left running (leaked GPUs), a traceback, a wait for ready_timeout.
    """
    from chimed_trl.generation import LaunchedReplicas

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    command = stub_command(tmp_path, "--fail_on_devices 2,3 --fail_after 3")
    servers = LaunchedReplicas({"command": command, "replicas": 3, "gpus_per_replica": 2}, "m")
    with pytest.raises(UserError, match=r"a generation server replica failed to start, all 3 stopped: .*exited with "
                       r"code 3") as err:  # fmt: skip
        servers.start()
    assert "Traceback" not in str(err.value)
    seen = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sorted(x["devices"] for x in seen) == ["0,1", "4,5"]  # the two that came up
    assert all(gone(x["pid"]) for x in seen) and all(s.process is None for s in servers.servers)


def test_replica_settings_are_checked_in_one_place():
    """Bugs caught: a group count that does not fit the visible devices found only when a server fails on them."""
    config = GenerationServerConfig.from_dict({"command": "vllm serve {model} --port {port}", "replicas": 2,
                                               "gpus_per_replica": 4})  # fmt: skip
    with pytest.raises(UserError, match=r"replicas=2 x gpus_per_replica=4 needs 8 devices, CUDA_VISIBLE_DEVICES"):
        config.device_groups("0,1,2,3")
    assert config.device_groups("0,1,2,3,4,5,6,7,8") == ["0,1,2,3", "4,5,6,7"]
    one = GenerationServerConfig.from_dict("vllm serve {model} --port {port}")
    assert one.device_groups("3") == [None] and one.ready_timeout == 900  # one replica: the parent's devices
    for bad in ({"replicas": 0}, {"gpus_per_replica": "2"}):
        with pytest.raises(UserError, match=f"generation_server.{next(iter(bad))}="):
            GenerationServerConfig.from_dict({"command": "x {model} {port}", **bad})
