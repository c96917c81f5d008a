"""Text generation backends for evaluation: a local transformers model, or an OpenAI-compatible server.

Both are callables ``prompts -> completions``. A prompt is a user message (str) or a full message list;
with a chat template it is rendered with ``add_generation_prompt``. Greedy decoding by default, so
the tiny pipeline gives the same numbers twice. For large-scale generation use a vLLM server
(``trl vllm-serve`` or ``vllm serve``) through :class:`OpenAIGenerator`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

Prompt = str | list[dict]


class TransformersGenerator:
    def __init__(
        self, model, tokenizer, max_new_tokens: int = 128, batch_size: int = 8, use_chat_template: bool = True
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.use_chat_template = use_chat_template and tokenizer.chat_template is not None

    def render(self, prompt: Prompt) -> str:
        if not self.use_chat_template:
            return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        texts = [self.render(p) for p in prompts]
        saved = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        outputs: list[str] = []
        try:
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                )
                enc = {k: v.to(self.model.device) for k, v in enc.items()}
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new_tokens = generated[:, enc["input_ids"].shape[1] :]
                outputs += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        finally:
            self.tokenizer.padding_side = saved
        return [o.strip() for o in outputs]


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
        client = self._client()
        outputs = []
        for prompt in prompts:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            response = client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0.0
            )
            outputs.append((response.choices[0].message.content or "").strip())
        return outputs

    def __repr__(self) -> str:  # no key, ever
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"
