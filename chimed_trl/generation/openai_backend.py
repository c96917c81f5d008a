"""Chat completions from any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, ``transformers serve``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from chimed_trl.generation.base import Prompt, SamplingParams, as_messages


class OpenAIGenerator:
    """Chat completions from any OpenAI-compatible endpoint (OpenAI, vLLM, ``transformers serve``).

    The API key is read from the environment variable named by ``api_key_env`` at call time and is
    never stored on the object's public fields, logged or written to reports.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 256,
        timeout: float = 60.0,
    ):
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.max_tokens, self.timeout = max_tokens, timeout

    def _client(self):
        from openai import OpenAI

        return OpenAI(
            base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "EMPTY", timeout=self.timeout
        )

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy, one completion per prompt (what evaluation uses)."""
        return [c[0] for c in self.generate(prompts, SamplingParams(n=1, max_new_tokens=self.max_tokens))]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[str]]:
        client = self._client()
        outputs = []
        for prompt in prompts:
            samples = []
            for _ in range(sampling.n):  # one request per sample: not every server honours `n`
                response = client.chat.completions.create(
                    model=self.model,
                    messages=as_messages(prompt),
                    max_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                )
                samples.append((response.choices[0].message.content or "").strip())
            outputs.append(samples)
        return outputs

    def __repr__(self) -> str:  # no key, ever
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"
