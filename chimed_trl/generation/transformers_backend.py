"""Local generation with a transformers model: batched, left-padded, KV cache."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from chimed_trl.generation.base import Prompt, SamplingParams, as_messages


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
        return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy, one completion per prompt (what evaluation uses)."""
        sampling = SamplingParams(n=1, max_new_tokens=self.max_new_tokens)
        return [c[0] for c in self.generate(prompts, sampling)]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[str]]:
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
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed + i)
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=not sampling.greedy,
                    temperature=sampling.temperature if not sampling.greedy else None,
                    top_p=sampling.top_p if not sampling.greedy else None,
                    num_return_sequences=sampling.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new_tokens = generated[:, enc["input_ids"].shape[1] :]
                outputs += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        finally:
            self.tokenizer.padding_side = saved
        flat = [o.strip() for o in outputs]
        return [flat[k * sampling.n : (k + 1) * sampling.n] for k in range(len(texts))]
