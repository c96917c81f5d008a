"""Augmentation's responders: who answers each prompt (an OpenAI-compatible endpoint or a local model) and how.

:class:`ResponderConfig` is one entry of the YAML's ``responders:`` (checked field by field, one line per
mistake); :class:`APIResponder` asks an endpoint, :class:`LocalResponder` a local transformers model through
:class:`~chimed_trl.generation.TransformersGenerator`. Each keeps thread-safe counters for ``metrics.json``.
API keys are read from the environment variable a responder names in ``api_key_env``, never stored.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

from chimed_trl.data.augment import with_system
from chimed_trl.errors import UserError, json_problem
from chimed_trl.generation.base import SamplingParams
from chimed_trl.generation.openai_backend import OpenAIGenerator, Request
from chimed_trl.runfiles import api_key_from_env, check_env_name

if TYPE_CHECKING:
    from chimed_trl.stages.augment import AugmentArguments


# ---------------------------------------------------------------- configuration
@dataclass
class ResponderConfig:
    """One responder: a local model (``model``) or an OpenAI-compatible endpoint (``base_url`` + ``api_model``)."""

    name: str
    model: str | None = None  # local transformers model directory (or hub id)
    base_url: str | None = None  # e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    api_model: str | None = None  # the request's `model`, e.g. gpt-4
    api_key_env: str | None = None  # NAME of the env variable holding the key; None: no key (local server)
    position: int | None = None  # input responses ranked above this answer; None -> 1
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # sampling seed (API: per prompt, derived from the record id)
    system_prompt: str | None = None  # prepended unless the prompt already has a system message
    extra_body: dict | None = None  # server-specific request fields, e.g. transformers serve's generation_config
    chat_template: str | None = None  # local: chatml, chimed or a Jinja string (None: the tokenizer's)
    dtype: str = "float32"  # local
    batch_size: int = 8  # local: prompts per generate() call

    @property
    def kind(self) -> str:
        return "api" if self.base_url else "local"

    def spec(self) -> dict:
        """What must not change between a run and its resume (endpoints and paths may)."""
        return {"name": self.name, "kind": self.kind, "position": self.position}


# Typed responder fields (YAML/JSON give any type; a wrong one must not surface later as a confusing error).
RESPONDER_NUMBERS = {
    "max_new_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "seed": int,
    "batch_size": int,
    "position": int,
}
LOCAL_DTYPES = ("float32", "bfloat16", "float16")


def _responder(entry: Any, where: str) -> ResponderConfig:
    if isinstance(entry, ResponderConfig):
        return entry
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping like {{name: ..., model: ...}}, got {entry!r}")
    if "api_key" in entry:
        raise UserError(f"{where}: never put a key in a config; export it and name the variable in `api_key_env`")
    known = set(ResponderConfig.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; a responder takes {', '.join(sorted(known))}")
    if not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise UserError(f"{where}.name: give each responder a non-empty name (it becomes its `sources` label)")
    for key, kinds in RESPONDER_NUMBERS.items():
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            expected = "an integer" if kinds is int else "a number"
            raise UserError(f"{where}.{key}: expected {expected}, got {value!r}")
    if entry.get("dtype", "float32") not in LOCAL_DTYPES:
        raise UserError(f"{where}.dtype: expected one of {', '.join(LOCAL_DTYPES)}, got {entry['dtype']!r}")
    check_env_name(entry.get("api_key_env"), f"{where}.api_key_env")
    responder = ResponderConfig(**entry)
    if responder.base_url and not responder.api_model:
        raise UserError(f"{where}: an endpoint responder needs `api_model` (the request's model name)")
    if responder.base_url and responder.model:
        raise UserError(f"{where}: give `model` (local) or `base_url` + `api_model` (endpoint), not both")
    if responder.max_new_tokens < 1 or responder.temperature < 0:
        raise UserError(f"{where}: max_new_tokens must be >= 1 and temperature >= 0")
    if responder.batch_size < 1:
        raise UserError(f"{where}.batch_size: must be >= 1, got {responder.batch_size}")
    return responder


def parse_responders(entries: list, where: str = "responders") -> list[ResponderConfig]:
    """YAML dicts, or JSON strings from the CLI (one object each, or one list of objects)."""
    flat: list = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}[{i}]: not valid JSON ({json_problem(e)}): {entry[:60]!r}") from None
        flat += entry if isinstance(entry, list) else [entry]
    responders = [_responder(e, f"{where}[{i}]") for i, e in enumerate(flat)]
    names = [r.name for r in responders]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: responder names must be unique, got {names}")
    return responders


# ---------------------------------------------------------------- responders
# what the openai client retries (with backoff) before an error reaches us
RETRIED = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class ResponderStats:
    """Thread-safe per-responder counters."""

    # attempts: HTTP requests sent to an endpoint, retries included
    FIELDS = ("requested", "kept", "empty", "duplicate", "retries", "attempts", "prompt_tokens", "completion_tokens")

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = Counter({f: 0 for f in self.FIELDS})

    def add(self, **deltas: int) -> None:
        with self._lock:
            self.counts.update(deltas)


class ResponderClient(OpenAIGenerator):
    """The package's one OpenAI-compatible client (connection pool, ``max_concurrency`` requests in flight, the
    ``openai`` client's bounded retries with backoff and ``Retry-After``), with a responder's ``extra_body`` added to
    every request and its HTTP attempts and token usage counted into the responder's :class:`ResponderStats`."""

    def __init__(self, config: ResponderConfig, args: AugmentArguments, stats: ResponderStats):
        super().__init__(
            config.base_url,
            config.api_model,
            api_key_env=config.api_key_env or "",  # none: a local server that takes any key
            max_tokens=config.max_new_tokens,
            timeout=args.request_timeout_s,
            max_concurrency=args.max_concurrency,
            max_retries=args.max_retries,
            show_progress=False,
        )
        self.extra_body, self.stats = config.extra_body, stats

    def request_body(self, sampling: SamplingParams, seed: int, count: int) -> dict:
        body = super().request_body(sampling, seed, count)
        if self.extra_body:  # server-specific fields win over the sampling defaults (e.g. a generation_config)
            body["extra_body"] = {**body.get("extra_body", {}), **self.extra_body}
        return body

    @property
    def replicas(self):
        if self._replicas is None:  # the same clients, sending through an HTTP client that counts for the stats
            hooks = {"request": [self._attempted], "response": [self._answered]}
            for replica in super().replicas.replicas:
                http = openai.DefaultHttpxClient(timeout=self.timeout, event_hooks=hooks)
                replica.client = replica.client.with_options(http_client=http)
        return self._replicas

    def _attempted(self, request) -> None:
        self.stats.add(attempts=1)  # every HTTP attempt, retries included: retries = attempts - requests

    def _answered(self, response) -> None:
        if response.status_code != 200:
            return
        response.read()
        usage = json.loads(response.content or b"{}").get("usage") or {}
        self.stats.add(
            prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0
        )


class APIResponder:
    """An endpoint responder: one request per prompt through :class:`ResponderClient`, each seeded per prompt."""

    def __init__(self, config: ResponderConfig, args: AugmentArguments):
        self.config, self.stats = config, ResponderStats()
        api_key_from_env(config.api_key_env, f"responder {config.name!r}: api_key_env")  # exported, or one line
        self.client = ResponderClient(config, args, self.stats)

    def answer_batch(self, prompts: list[list[dict]], rids: list[str]) -> tuple[list[str | None], str | None]:
        """The answers in prompt order (None where a request failed) and the failure, as one line, if any."""
        cfg = self.config
        messages = [with_system(p, cfg.system_prompt) for p in prompts]
        sampling = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
        # per prompt (from its record id), so a resumed run draws the same sample as an uninterrupted one
        base = cfg.seed if cfg.seed is not None else random.getrandbits(31)
        requests = [Request(i, 0, 1, base + int(rid[:8], 16) % 2**31) for i, rid in enumerate(rids)]
        answers: list[str | None] = [None] * len(prompts)
        sent = self.stats.counts["attempts"]
        try:
            for request, completions in self.client.stream(messages, sampling, requests):
                answers[request.prompt] = completions[0].text
                self.stats.add(requested=1)
        except (openai.OpenAIError, UserError) as e:
            retried = isinstance(e, RETRIED) and self.client.max_retries
            return answers, one_line(e) + (f" (after {self.client.max_retries} retries)" if retried else "")
        finally:
            self.stats.add(retries=self.stats.counts["attempts"] - sent - sum(a is not None for a in answers))
        return answers, None


class LocalResponder:
    """A local transformers model, greedy or sampled, batched through :class:`TransformersGenerator`."""

    def __init__(self, config: ResponderConfig, args: AugmentArguments):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from chimed_trl.generation import TransformersGenerator
        from chimed_trl.modeling.load import ensure_pad_token
        from chimed_trl.templates import get_chat_template

        self.config, self.stats = config, ResponderStats()
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            model = AutoModelForCausalLM.from_pretrained(
                config.model, dtype=getattr(torch, config.dtype), use_safetensors=True
            )
        except OSError as e:
            raise UserError(f"responder {config.name!r}: cannot load model {config.model!r}: {one_line(e)}") from None
        if config.chat_template:
            tokenizer.chat_template = get_chat_template(config.chat_template)
        ensure_pad_token(tokenizer)
        if torch.cuda.is_available():
            model = model.to("cuda")
        self.tokenizer = tokenizer
        self.generator = TransformersGenerator(model.eval(), tokenizer, config.max_new_tokens, config.batch_size)

    def answer_batch(self, prompts: list[list[dict]], batch_index: int) -> list[str]:
        from chimed_trl.generation import SamplingParams

        cfg = self.config
        prompts = [with_system(p, cfg.system_prompt) for p in prompts]
        seed = None if cfg.seed is None else cfg.seed + batch_index
        sampling = SamplingParams(
            n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=seed
        )
        answers = [c[0] for c in self.generator.generate(prompts, sampling)]
        # token tally by re-tokenising (the generator returns text): close to, not exactly, the generated count
        self.stats.add(
            requested=len(prompts),
            prompt_tokens=sum(
                len(self.tokenizer(self.generator.render(p), add_special_tokens=False)["input_ids"]) for p in prompts
            ),
            completion_tokens=sum(len(self.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers),
        )
        return answers


def one_line(error: Exception) -> str:
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def check_endpoints(args: AugmentArguments) -> None:
    """Pre-flight, before any model loads or the output dir is claimed: each endpoint responder's key is exported,
    its server answers ``GET /models`` and serves its ``api_model`` (one line naming the responder and URL if not)."""
    from chimed_trl.generation.openai_backend import check_server

    for r in args.responders:
        if r.kind == "api":
            key = api_key_from_env(r.api_key_env, f"responder {r.name!r}: api_key_env")
            try:
                check_server(r.base_url, r.api_model, api_key=key, timeout=min(args.request_timeout_s, 10.0))
            except UserError as e:
                raise UserError(f"responder {r.name!r}: {e}") from None
