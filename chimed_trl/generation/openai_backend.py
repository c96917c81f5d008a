"""Chat completions from any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, ``transformers serve``).

- One ``openai.OpenAI`` client per generator, reused by every request (its connection pool is thread-safe).
- Bounded concurrency: a thread pool of ``max_concurrency`` requests in flight.
- Bounded retries with exponential backoff on 408/409/429/5xx, connection errors and timeouts: the
  ``openai`` client's own (``max_retries``; 0.5 s doubling up to 8 s, with jitter; it honours
  ``Retry-After``). After the last retry the error is raised with the endpoint named.
- ``n`` samples per prompt: one request with ``n`` where the server honours it (``honours_n=True``:
  vLLM, SGLang, OpenAI), otherwise one request per sample (the default; ``transformers serve``
  ignores ``n``). Each fanned-out request carries its own seed (:func:`~chimed_trl.generation.base.sample_key`)
  so the samples differ and, on servers that honour per-request seeds (vLLM), repeat.
- ``sampling_via="generation_config"`` is for ``transformers serve``: it samples only when the request
  carries ``generation_config``, a JSON *string* that replaces the model's generation config (fields left
  out fall back to the model's own, e.g. its EOS ids), after which ``temperature``/``top_p``/``max_tokens``
  from the request are applied and ``seed`` calls ``torch.manual_seed`` (global to the server: seeded
  results repeat only with ``max_concurrency=1``). With ``--continuous-batching`` the *first* request
  fixes the sampling settings for every later one until the server restarts.
- The API key is read from the environment variable named by ``api_key_env``, handed to the client and
  kept nowhere else: never logged, never in ``repr``, never in outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from chimed_trl.errors import UserError
from chimed_trl.generation.base import Prompt, SamplingParams, as_messages, prompt_keys, sample_key

SAMPLING_VIA = ("openai", "generation_config")


class OpenAIGenerator:
    """``OpenAIGenerator(server.base_url, server.model).generate(prompts, SamplingParams(n=8, temperature=1))``"""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 256,
        timeout: float = 60.0,
        *,
        max_concurrency: int = 8,
        max_retries: int = 3,
        honours_n: bool = False,
        sampling_via: str = "openai",
        show_progress: bool = True,
    ):
        if sampling_via not in SAMPLING_VIA:
            raise UserError(f"sampling_via={sampling_via!r}: expected one of {SAMPLING_VIA}")
        if max_concurrency < 1 or max_retries < 0:
            raise UserError(f"max_concurrency ({max_concurrency}) must be >= 1 and max_retries ({max_retries}) >= 0")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.max_tokens, self.timeout = max_tokens, timeout
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.honours_n, self.sampling_via, self.show_progress = honours_n, sampling_via, show_progress
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "EMPTY",  # local servers take any key
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy, one completion per prompt (what evaluation uses)."""
        return [c[0] for c in self.generate(prompts, SamplingParams(n=1, max_new_tokens=self.max_tokens))]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[str]]:
        keys = prompt_keys([json.dumps(as_messages(p), ensure_ascii=False) for p in prompts])
        seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(7), "little")
        # greedy: one request per prompt, its answer repeated (n greedy answers are all the same)
        wanted = 1 if sampling.greedy else sampling.n
        per_request = wanted if self.honours_n else 1
        # one task per request: (prompt index, first sample index, samples asked for)
        tasks = [(i, j, per_request) for i in range(len(prompts)) for j in range(0, wanted, per_request)]
        outputs: list[list[str]] = [[""] * wanted for _ in prompts]
        client = self.client
        with (
            ThreadPoolExecutor(max_workers=self.max_concurrency) as pool,
            tqdm(total=len(prompts) * wanted, desc="generating", unit="sample", disable=not self.show_progress) as bar,
        ):
            futures = {
                pool.submit(self._request, client, prompts[i], sampling, sample_key(seed, keys[i], j), count): (i, j)
                for i, j, count in tasks
            }
            try:
                for future, (i, j) in futures.items():
                    texts = future.result()
                    outputs[i][j : j + len(texts)] = texts
                    bar.update(len(texts))
            except BaseException:
                pool.shutdown(cancel_futures=True)  # do not send the rest to a failing server
                raise
        return outputs if wanted == sampling.n else [row * sampling.n for row in outputs]

    def request_body(self, sampling: SamplingParams, seed: int, count: int) -> dict:
        """The keyword arguments of one ``chat.completions.create`` call (without model and messages)."""
        body: dict = {"max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature}
        extra: dict = {}
        if not sampling.greedy:
            body.update(top_p=sampling.top_p, seed=seed % 2**31)
            if self.sampling_via == "generation_config":
                config = {
                    "do_sample": True,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "top_k": sampling.top_k,  # 0: no implicit top-k, as the local backend and vLLM
                    "max_new_tokens": sampling.max_new_tokens,
                }
                extra["generation_config"] = json.dumps(config)
            elif sampling.top_k > 0:
                extra["top_k"] = sampling.top_k  # vLLM/SGLang read it from the request body
        if count > 1:
            body["n"] = count
        if extra:
            body["extra_body"] = extra
        return body

    def _request(self, client, prompt: Prompt, sampling: SamplingParams, seed: int, count: int) -> list[str]:
        try:
            response = client.chat.completions.create(
                model=self.model, messages=as_messages(prompt), **self.request_body(sampling, seed, count)
            )
        except Exception as err:  # the openai client has already retried max_retries times
            err.add_note(f"generation request to {self.base_url} (model {self.model!r}) failed")
            raise
        texts = [(choice.message.content or "").strip() for choice in response.choices]
        if len(texts) != count:
            raise UserError(
                f"{self.base_url} returned {len(texts)} completions for n={count}: it does not honour `n`; "
                "set honours_n: false"
            )
        return texts

    def __repr__(self) -> str:  # no key, ever
        return (
            f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"max_concurrency={self.max_concurrency}, honours_n={self.honours_n}, sampling_via={self.sampling_via!r})"
        )
