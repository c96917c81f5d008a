"""The one generation interface every backend implements, for evaluation and rejection sampling.

``generate(prompts, sampling) -> list[list[str]]``: for each prompt (a user message string or a
message list), ``sampling.n`` completions. Greedy (``temperature=0``) is the default so evaluation
numbers do not move between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Prompt = str | list[dict]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def as_messages(prompt: Prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class Generator(Protocol):
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[str]]: ...
