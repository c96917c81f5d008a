"""The one generation interface every backend implements, for evaluation and rejection sampling.

``generate(prompts, sampling) -> list[list[str]]``: for each prompt (a user message string or a
message list), ``sampling.n`` completions, in input order. Greedy (``temperature=0``) is the default
so evaluation numbers do not move between runs.

Seeded sampling is keyed per sample, not per batch: sample ``j`` of a prompt gets its own stream of
random numbers derived from ``(seed, prompt text, occurrence of that text, j)`` (:func:`sample_key`),
so the same seed gives the same samples whatever the batch size, the sorting, the number of
processes, or which other prompts are in the call (a resumed run regenerating only the missing
prompts gets what an uninterrupted run would have got).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chimed_trl.errors import UserError

Prompt = str | list[dict]


@dataclass(frozen=True)
class SamplingParams:
    """``n`` completions per prompt; ``temperature=0`` is greedy (then ``top_p`` and ``seed`` do not matter).

    ``top_k=0`` (the default) samples from the full (temperature-scaled, ``top_p``-filtered) distribution, as
    vLLM does by default, not from transformers' implicit ``top_k=50``; ``top_k > 0`` keeps the k most likely
    tokens first (a near-uniform small model then samples what it has learned instead of its long tail).
    """

    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None
    top_k: int = 0  # 0 = off

    def __post_init__(self):
        checks = {
            "n": self.n >= 1,
            "temperature": math.isfinite(self.temperature) and self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "top_k": self.top_k >= 0,
        }
        for field, ok in checks.items():
            if not ok:
                raise UserError(f"sampling {field}={getattr(self, field)!r} is out of range")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def as_messages(prompt: Prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_keys(texts: Sequence[str]) -> list[int]:
    """A 64-bit key per prompt: its text's hash mixed with how many times that text came before.

    Keyed by content (not position) so that a subset of the prompts, in any order, gets the same
    samples; the occurrence count keeps two copies of one prompt from getting identical samples.
    """
    seen: Counter[str] = Counter()
    keys = []
    for text in texts:
        digest = hashlib.sha256(f"{seen[text]}\0{text}".encode()).digest()
        seen[text] += 1
        keys.append(int.from_bytes(digest[:8], "little"))
    return keys


def sample_key(seed: int, prompt_key: int, sample_index: int) -> int:
    """A non-negative 63-bit key for one sample's random stream (independent of batching)."""
    digest = hashlib.sha256(f"{seed}:{prompt_key}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream_keys(texts: Sequence[str], seed: int, seeds: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """``(seed, prompt key)`` of each prompt: ``sample_key(*stream_keys[i], j)`` is sample ``j``'s random stream.

    Without ``seeds`` one seed covers the call and the prompt keys count repeated texts (:func:`prompt_keys`).
    With ``seeds`` (one per prompt) each prompt is keyed exactly as if it were generated alone with its own
    seed, so a caller that seeds per prompt (rejection sampling) gets the same samples in any batch.
    """
    if seeds is None:
        return [(seed, key) for key in prompt_keys(texts)]
    if len(seeds) != len(texts):
        raise ValueError(f"{len(seeds)} seeds for {len(texts)} prompts")
    return [(int(s), prompt_keys([text])[0]) for s, text in zip(seeds, texts)]


@dataclass(frozen=True)
class Completion:
    """One sampled answer; ``truncated``: it stopped at ``max_new_tokens`` (no EOS; a server's ``length``)."""

    text: str
    truncated: bool = False


class Generator(Protocol):
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[str]]: ...

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]: ...
