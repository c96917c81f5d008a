import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: one torch thread each (and in the recipes they launch), so two workers
    # never fight over two cores with four spinning threads on models this small
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The embedded tiny model, built once per session (with the ``reward/`` seq-cls twin some tests load)."""
    from chimed_trl.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0, with_reward_twin=True)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public samples in ../shared/data; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


SERVE_COMMAND = "{bindir}/transformers serve {model} --host 127.0.0.1 --port {port} --device cpu"


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir):
    """A real OpenAI-compatible server (``transformers serve``) on 127.0.0.1 running the tiny model.

    Yields the :class:`~chimed_trl.generation.LaunchedServer`: ``base_url``, and ``model`` (the request's
    ``model`` must be exactly the launch string). It ignores ``n`` and samples only when
    ``extra_body={"generation_config": ...}`` asks. Needs the ``serving`` extra.
    """
    import sys

    pytest.importorskip("fastapi")
    from chimed_trl.generation import LaunchedServer

    command = SERVE_COMMAND.replace("{bindir}", str(Path(sys.executable).parent))
    with LaunchedServer(command, model=str(tiny_model_dir), ready_timeout=120) as server:
        yield server


PORT_TAKEN = ("EADDRINUSE", "address already in use", "Address already in use")


def accelerate_launch(config_file: str, script_args: list[str], attempts: int = 3, **run_kwargs):
    """``accelerate launch --config_file ... --main_process_port P <script_args>`` as a subprocess.

    accelerate binds the rendezvous port itself, so a port found free here can be taken by another process
    before it binds it: when the run fails because the port is in use, it is retried on a new port (the
    race is the machine's, not the code under test). Returns the CompletedProcess of the last attempt.
    """
    import socket
    import subprocess
    import sys

    run_kwargs = {"cwd": REPO, "capture_output": True, "text": True, "timeout": 600, **run_kwargs}
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file]
        proc = subprocess.run([*launch, "--main_process_port", str(port), *script_args], **run_kwargs)
        if proc.returncode == 0 or not any(
            marker in (proc.stderr or "") + (proc.stdout or "") for marker in PORT_TAKEN
        ):
            return proc
    return proc


def pytest_collection_modifyitems(config, items):
    """The end-to-end files first: under ``-n auto --dist loadfile`` the longest files start at once instead of
    last, so the run ends when the work does, not one long file later (a stable sort keeps each file's order)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
