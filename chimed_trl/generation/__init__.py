"""Generation backends behind one interface (:class:`~chimed_trl.generation.base.Generator`).

``generate(prompts, SamplingParams) -> list[list[str]]``; greedy by default. Backends: a local
transformers (or PEFT) model (:mod:`.transformers_backend`), any OpenAI-compatible server (vLLM,
SGLang, ``transformers serve``: :mod:`.openai_backend`), and a launcher that serves a checkpoint for
the duration of a ``with`` block (:mod:`.server`). :func:`check_server` is the one pre-flight for any
OpenAI-compatible server (reachable, serves the model) and :func:`failure_line` the one-line report of a
request that failed for good. No in-process vLLM engine ships: it could not be
tested here (no GPU); at scale run ``vllm serve`` through :func:`launch_for_model`.
"""

from chimed_trl.generation.base import Completion, Generator, Prompt, SamplingParams, as_messages
from chimed_trl.generation.openai_backend import OpenAIGenerator, check_server, failure_line
from chimed_trl.generation.server import (
    GenerationServerConfig,
    LaunchedReplicas,
    LaunchedServer,
    free_port,
    launch_for_model,
)
from chimed_trl.generation.transformers_backend import SeededSampler, TransformersGenerator

__all__ = [
    "Completion",
    "check_server",
    "failure_line",
    "GenerationServerConfig",
    "Generator",
    "LaunchedReplicas",
    "LaunchedServer",
    "OpenAIGenerator",
    "Prompt",
    "SamplingParams",
    "SeededSampler",
    "TransformersGenerator",
    "as_messages",
    "free_port",
    "launch_for_model",
]
