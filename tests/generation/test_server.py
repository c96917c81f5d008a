"""The launched-server path on a real ``transformers serve`` process (127.0.0.1, tiny model, CPU)."""

import pytest

from chimed_trl.errors import UserError
from chimed_trl.generation import LaunchedServer, OpenAIGenerator, SamplingParams


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
    command = "python -u -c \"print('boo' + 'ting'); import time; time.sleep(60)\" {model} {port}"
    with pytest.raises(UserError, match="ready_timeout=1s") as err:
        LaunchedServer(command, model="m", ready_timeout=1).start()
    assert "booting" in str(err.value)  # from the log: the command itself only has 'boo' + 'ting'
    assert "python -u -c" in str(err.value)
