"""Chat completions from any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, ``transformers serve``).

- One ``openai.OpenAI`` client per generator, reused by every request (its connection pool is thread-safe).
- Every request in flight at once, up to ``max_concurrency`` (a thread pool), answers handed back as they
  complete (:meth:`OpenAIGenerator.stream`), so a caller can store each one before the next arrives.
- Replicas: ``base_url`` may be a list of servers. Each request goes to the replica with the fewest
  requests in flight; a replica that stops answering (connection error, timeout or 5xx after its retries)
  is taken out, and its requests go to the others; only when none is left does the request fail.
- Pre-flight: :func:`check_server` asks ``GET {base_url}/models`` (short timeout) before anything heavy
  loads, and :func:`failure_line` turns a failed request into one line naming the URL, model and next step.
- Bounded retries with exponential backoff on 408/409/429/5xx, connection errors and timeouts: the
  ``openai`` client's own (``max_retries``; 0.5 s doubling up to 8 s, with jitter; it honours
  ``Retry-After``). After the last retry the error is raised with the endpoint named.
- ``finish_reason == "length"`` marks an answer as truncated (:class:`~chimed_trl.generation.base.Completion`).
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
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from tqdm.auto import tqdm

from chimed_trl.errors import UserError
from chimed_trl.generation.base import Completion, Prompt, SamplingParams, as_messages, sample_key, stream_keys

logger = logging.getLogger(__name__)
SAMPLING_VIA = ("openai", "generation_config")


def check_server(base_url: str, model: str, api_key: str | None = None, timeout: float = 5.0) -> list[str]:
    """Pre-flight: ``GET {base_url}/models`` answers within ``timeout`` and lists ``model``; returns the served ids.

    Any fault (nothing listening, a timeout, an HTTP 4xx, not an OpenAI-compatible answer, the model not
    served) is one :class:`UserError` line naming the URL, the model and what to do; no traceback. A server that
    is up but cannot list its models (HTTP 5xx) or a local model path that is not listed (``transformers serve``
    loads paths on demand) is logged and left to the first request.
    ``api_key`` (the secret itself) only travels in the request header.
    """
    url = f"{base_url.rstrip('/')}/models"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    where = f"generation server {base_url} (model {model!r})"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        if err.code >= 500:  # up, but cannot list (`transformers serve` offline answers 500): reachable is enough
            logger.warning("%s: GET %s answered HTTP %d; the model name is checked at the first request", where, url,
                           err.code)  # fmt: skip
            return []
        hint = "check the API key" if err.code in (401, 403) else "check that the URL ends with the API root (/v1)"
        raise UserError(f"{where}: GET {url} answered HTTP {err.code} {err.reason}; {hint}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise UserError(_no_answer(where, url, timeout)) from None
        reason = err.reason.strerror if isinstance(err.reason, OSError) and err.reason.strerror else err.reason
        raise UserError(f"{where} is not reachable ({reason}); start the server or fix the URL") from None
    except TimeoutError:
        raise UserError(_no_answer(where, url, timeout)) from None
    except (OSError, ValueError) as err:  # a reset connection, a body that is not JSON
        raise UserError(
            f"{where}: GET {url} gave no model list ({type(err).__name__}); is it OpenAI-compatible?"
        ) from None
    served = (
        [str(m.get("id")) for m in payload.get("data", []) if isinstance(m, dict)] if isinstance(payload, dict) else []
    )
    if model not in served and os.path.isdir(model):  # servers that load a local path on demand do not list it
        logger.warning("%s: not in the served list %s; a local path, checked at the first request", where, served)
    elif model not in served:
        raise UserError(f"{where}: the server serves {served}, not {model!r}; ask for one of those names")
    return served


def _no_answer(where: str, url: str, timeout: float) -> str:
    return f"{where}: GET {url} got no answer within {timeout:g} s; is it still loading, or the wrong port?"


def failure_line(err: BaseException, base_url, model: str) -> str:
    """One line for a generation request that failed for good (after retries and failover); never the key."""
    status = getattr(err, "status_code", None)
    what = f"HTTP {status}" if status else type(err).__name__
    message = str(getattr(err, "message", None) or err).splitlines()[0][:200] if str(err) else ""
    urls = base_url if isinstance(base_url, str) else ", ".join(base_url)
    return f"generation request to {urls} (model {model!r}) failed: {what}{': ' + message if message else ''}"


@dataclass
class _Replica:
    url: str
    client: object
    in_flight: int = 0
    sent: int = 0
    alive: bool = True


class _Replicas:
    """Least-loaded dispatch over the live replicas, thread-safe; a replica that fails hard is taken out."""

    def __init__(self, replicas: list[_Replica]):
        self.replicas, self.lock = replicas, threading.Lock()

    def acquire(self) -> _Replica | None:
        with self.lock:
            live = [r for r in self.replicas if r.alive]
            if not live:
                return None
            replica = min(live, key=lambda r: (r.in_flight, r.sent))
            replica.in_flight += 1
            replica.sent += 1
            return replica

    def release(self, replica: _Replica, failed: bool = False) -> bool:
        """Ends a request; ``failed``: the replica failed hard. True when the request should go to another replica.

        The last live replica is never taken out: its error is then the request's error.
        """
        with self.lock:
            replica.in_flight -= 1
            if not failed:
                return False
            others = [r for r in self.replicas if r.alive and r is not replica]
            if replica.alive and others:
                replica.alive = False
                logger.warning("generation replica %s stopped answering: its requests go to the others", replica.url)
            return bool(others)


@dataclass(frozen=True)
class Request:
    """One HTTP request: prompt ``prompt``, samples ``first .. first + count - 1``, seeded with ``seed``."""

    prompt: int
    first: int
    count: int
    seed: int


class OpenAIGenerator:
    """``OpenAIGenerator(server.base_url, server.model).generate(prompts, SamplingParams(n=8, temperature=1))``

    ``base_url`` is one server or a list of replicas of the same model.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
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
        self.base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not self.base_urls:
            raise UserError("OpenAIGenerator needs at least one base_url")
        self.base_url = self.base_urls[0] if len(self.base_urls) == 1 else list(self.base_urls)
        self.model, self.api_key_env = model, api_key_env
        self.max_tokens, self.timeout = max_tokens, timeout
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.honours_n, self.sampling_via, self.show_progress = honours_n, sampling_via, show_progress
        self._replicas: _Replicas | None = None

    @property
    def replicas(self) -> _Replicas:
        if self._replicas is None:
            from openai import OpenAI

            key = os.environ.get(self.api_key_env) or "EMPTY"  # local servers take any key
            self._replicas = _Replicas(
                [
                    _Replica(
                        url, OpenAI(base_url=url, api_key=key, timeout=self.timeout, max_retries=self.max_retries)
                    )
                    for url in self.base_urls
                ]
            )
        return self._replicas

    @property
    def client(self):
        """The first replica's client (one ``openai.OpenAI`` per replica, reused by every request)."""
        return self.replicas.replicas[0].client

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy, one completion per prompt (what evaluation uses)."""
        return [c[0] for c in self.generate(prompts, SamplingParams(n=1, max_new_tokens=self.max_tokens))]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams, seeds=None) -> list[list[str]]:
        return [[c.text for c in row] for row in self.generate_completions(prompts, sampling, seeds)]

    def generate_completions(
        self, prompts: Sequence[Prompt], sampling: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """``sampling.n`` completions per prompt in input order (every request in flight up to the bound)."""
        requests = self.plan(prompts, sampling, seeds)
        outputs: list[list[Completion]] = [[Completion("")] * sampling.n for _ in prompts]
        with tqdm(
            total=len(prompts) * sampling.n, desc="generating", unit="sample", disable=not self.show_progress
        ) as bar:
            for request, completions in self.stream(prompts, sampling, requests):
                outputs[request.prompt][request.first : request.first + len(completions)] = completions
                bar.update(len(completions))
        return outputs

    def plan(self, prompts: Sequence[Prompt], sampling: SamplingParams, seeds: Sequence[int] | None = None):
        """The requests that bring ``sampling.n`` samples of every prompt: one with ``n`` where honoured, else one each.

        Greedy: one request per prompt, its answer repeated (n greedy answers are all the same).
        """
        texts = [json.dumps(as_messages(p), ensure_ascii=False) for p in prompts]
        seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(7), "little")
        keys = stream_keys(texts, seed, seeds)
        wanted = 1 if sampling.greedy else sampling.n
        per_request = wanted if self.honours_n else 1
        return [
            Request(i, j, per_request, sample_key(*keys[i], j))
            for i in range(len(prompts))
            for j in range(0, wanted, per_request)
        ]

    def stream(
        self, prompts: Sequence[Prompt], sampling: SamplingParams, requests: Sequence[Request]
    ) -> Iterator[tuple[Request, list[Completion]]]:
        """Send every request (up to ``max_concurrency`` in flight); yield ``(request, completions)`` as each ends.

        Greedy requests yield ``sampling.n`` copies of their one answer. When a request fails for good the
        queued ones are cancelled, the ones already in flight are still yielded as they end (nothing that
        came back is lost), then the first error is raised.
        """
        replicas, error = self.replicas, None
        repeat = sampling.n if sampling.greedy else 1
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            pending = {pool.submit(self._request, replicas, prompts[q.prompt], sampling, q): q for q in requests}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        request = pending.pop(future)
                        if future.cancelled():
                            continue
                        if future.exception() is not None:
                            if error is None:
                                error = future.exception()
                                for other in pending:  # do not send the rest to a failing server
                                    other.cancel()
                            continue
                        yield request, future.result() * repeat
            finally:
                pool.shutdown(cancel_futures=True)
        if error is not None:
            raise error

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

    def _request(self, replicas: _Replicas, prompt: Prompt, sampling: SamplingParams, request: Request):
        """One request, on the least-loaded live replica; on a replica that fails hard, again on another."""
        import openai

        failover = (openai.APIConnectionError, openai.InternalServerError)  # APITimeoutError is a connection error
        body = self.request_body(sampling, request.seed, request.count)
        while True:
            replica = replicas.acquire()
            if replica is None:
                raise UserError(f"no generation replica of {self.base_urls} is answering")
            try:
                response = replica.client.chat.completions.create(
                    model=self.model, messages=as_messages(prompt), **body
                )
            except failover as err:  # the openai client has already retried max_retries times
                if replicas.release(replica, failed=True):
                    continue
                err.add_note(f"generation request to {replica.url} (model {self.model!r}) failed")
                raise
            except Exception as err:
                replicas.release(replica)
                err.add_note(f"generation request to {replica.url} (model {self.model!r}) failed")
                raise
            replicas.release(replica)
            break
        completions = [
            Completion((choice.message.content or "").strip(), choice.finish_reason == "length")
            for choice in response.choices
        ]
        if len(completions) != request.count:
            raise UserError(
                f"{replica.url} returned {len(completions)} completions for n={request.count}: it does not honour "
                "`n`; set honours_n: false"
            )
        return completions

    def __repr__(self) -> str:  # no key, ever
        return (
            f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"max_concurrency={self.max_concurrency}, honours_n={self.honours_n}, sampling_via={self.sampling_via!r})"
        )
