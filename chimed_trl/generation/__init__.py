"""Generation backends behind one interface (:class:`~chimed_trl.generation.base.Generator`).

``generate(prompts, SamplingParams) -> list[list[str]]``; greedy by default. Backends: a local
transformers model, any OpenAI-compatible server (vLLM, SGLang, ``transformers serve``).
"""

from chimed_trl.generation.base import Generator, Prompt, SamplingParams, as_messages
from chimed_trl.generation.openai_backend import OpenAIGenerator
from chimed_trl.generation.server import LaunchedServer, free_port
from chimed_trl.generation.transformers_backend import TransformersGenerator

__all__ = [
    "Generator",
    "LaunchedServer",
    "OpenAIGenerator",
    "Prompt",
    "SamplingParams",
    "TransformersGenerator",
    "as_messages",
    "free_port",
]
