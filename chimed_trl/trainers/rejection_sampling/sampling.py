"""Prompts in, sampled answers out: prompt checks, over-long prompts, per-prompt seeds, both generation paths.

Every prompt is sampled with its own seed (:func:`prompt_seed`), handed to the backend with the prompt
(``seeds=``), so its answers depend on nothing else: not the batch it lands in, not the process, not the
order a server answers in. A local round is one ``generate`` call per ``generation_batch_size`` prompts; a
server round sends every request at once (up to ``generation_max_concurrency`` in flight) and stores each
answer as it comes back. :func:`open_generator` gives a round its generator: the local model, the external
server(s), or K launched replicas on the round's policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from chimed_trl.errors import UserError
from chimed_trl.generation.base import Completion, SamplingParams
from chimed_trl.trainers.rejection_sampling.store import GenerationStore

logger = logging.getLogger(__name__)


def prompt_seed(seed: int, round_index: int, prompt_id: str) -> int:
    """The sampling seed of one prompt in one round: independent of rank, batch and order."""
    digest = hashlib.blake2b(f"{seed}:{round_index}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def prompt_id(prompt: list[dict]) -> str:
    return hashlib.blake2b(json.dumps(prompt, ensure_ascii=False).encode(), digest_size=8).hexdigest()


def sampling_params(args) -> SamplingParams:
    """The round's sampling settings (the seed travels per prompt, not here)."""
    return SamplingParams(
        args.num_samples, args.temperature, args.top_p, args.max_new_tokens, None, top_k=args.sampling_top_k
    )


def check_prompts(rows, where: str = "train_dataset") -> list[dict]:
    """``[{"id", "prompt", "reference"}]``; a prompt must be a non-empty message list ending with a user turn."""
    prompts, ids = [], set()
    duplicates = 0
    for i, row in enumerate(rows):
        place = f"{where}[{i}]"
        if not isinstance(row, dict) or "prompt" not in row:
            raise UserError(f"{place}: expected a mapping with a 'prompt' (a message list or a user string)")
        messages = [{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"]
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{place}: field 'prompt': empty prompt")
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            role = last.get("role") if isinstance(last, dict) else type(last).__name__
            raise UserError(f"{place}: field 'prompt': must end with a user turn, ends with {role!r}")
        if not str(last.get("content") or "").strip():
            raise UserError(f"{place}: field 'prompt': empty prompt (the last user turn has no text)")
        pid = str(row["id"]) if row.get("id") is not None else prompt_id(messages)
        if pid in ids:
            if row.get("id") is not None:
                raise UserError(f"{place}: field 'id': duplicate prompt id {pid!r}")
            duplicates += 1
            continue
        ids.add(pid)
        reference = row.get("reference")
        prompts.append({"id": pid, "prompt": [dict(m) for m in messages], "reference": reference})
    if not prompts:
        raise UserError(f"{where}: no prompts")
    if duplicates:
        logger.warning("%s: skipped %d duplicate prompts", where, duplicates)
    return prompts


# ----- over-long prompts -------------------------------------------------------------------------------
def token_count(tokenizer, messages: list[dict], add_generation_prompt: bool) -> int:
    """Tokens of a conversation as the policy sees it (its chat template; the template owns the specials)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _cut_start(tokenizer, messages: list[dict], budget: int) -> list[dict] | None:
    """The last message's text cut from its start (in tokens) so the prompt fits; None when nothing fits."""
    ids = tokenizer(messages[-1]["content"], add_special_tokens=False).input_ids

    def with_last(k: int) -> list[dict]:
        return messages[:-1] + [{**messages[-1], "content": tokenizer.decode(ids[len(ids) - k :])}]

    low, high = 0, len(ids)  # the most tokens kept that still fit, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if token_count(tokenizer, with_last(middle), True) <= budget:
            low = middle
        else:
            high = middle - 1
    return with_last(low) if low > 0 else None


def truncate_left(tokenizer, messages: list[dict], budget: int) -> list[dict] | None:
    """Oldest turns dropped (a system message kept while it fits), then the start of the last user text cut."""
    system = messages[:1] if messages[0].get("role") == "system" else []
    turns = messages[len(system) :]
    while len(turns) > 1 and token_count(tokenizer, system + turns, True) > budget:
        turns = turns[1:]
    for head in (system, []) if system else ([],):
        if token_count(tokenizer, head + turns, True) <= budget:
            return head + turns
        cut = _cut_start(tokenizer, head + turns, budget)
        if cut is not None:
            return cut
    return None


def fit_prompts(prompts: list[dict], tokenizer, max_length: int | None, max_new_tokens: int, mode: str):
    """Prompts that leave ``max_new_tokens`` of ``max_length``: ``(prompts, {"dropped": n, "truncated": n})``.

    ``drop`` leaves an over-long prompt out, ``truncate_left`` cuts it from the start, ``error`` refuses the
    run naming the first one. Counted in every round's stats and logged.
    """
    counts = {"prompts_dropped_overflow": 0, "prompts_truncated_left": 0}
    if max_length is None:
        return prompts, counts
    budget = max_length - max_new_tokens
    kept = []
    for p in prompts:
        length = token_count(tokenizer, p["prompt"], True)
        if length <= budget:
            kept.append(p)
            continue
        where = f"prompt {p['id']!r} has {length} tokens; max_length={max_length} - max_new_tokens={max_new_tokens}"
        if mode == "error":
            raise UserError(f"{where} leaves room for {budget} (prompt_overflow: error; use drop or truncate_left)")
        cut = truncate_left(tokenizer, p["prompt"], budget) if mode == "truncate_left" else None
        if cut is None:
            counts["prompts_dropped_overflow"] += 1
            logger.warning("%s leaves room for %d: dropped (prompt_overflow: %s)", where, budget, mode)
            continue
        counts["prompts_truncated_left"] += 1
        kept.append({**p, "prompt": cut})
    if not kept:
        raise UserError(
            f"every prompt is longer than max_length={max_length} - max_new_tokens={max_new_tokens} tokens: "
            "raise max_length, lower max_new_tokens or set prompt_overflow: truncate_left"
        )
    if len(kept) < len(prompts) or counts["prompts_truncated_left"]:
        logger.warning("prompt_overflow (%s): %s of %d prompts", mode, counts, len(prompts))
    return kept, counts


# ----- generation --------------------------------------------------------------------------------------
def generate_local(generator, prompts: list[dict], sampling: SamplingParams, round_index: int, seed: int):
    """One batched ``generate`` call over ``prompts``: ``{prompt id: [Completion] * num_samples}``."""
    if not prompts:
        return {}
    seeds = [prompt_seed(seed, round_index, p["id"]) for p in prompts]
    rows = generator.generate_completions([p["prompt"] for p in prompts], sampling, seeds=seeds)
    for row in rows:
        if len(row) != sampling.n:
            raise RuntimeError(f"the generation backend returned {len(row)} of {sampling.n} samples")
    return {p["id"]: row for p, row in zip(prompts, rows)}


def stream_server(
    generator, prompts: Sequence[dict], sampling: SamplingParams, round_index: int, seed: int, store: GenerationStore
) -> Iterator[tuple[dict, list[Completion]]]:
    """Every missing answer of ``prompts`` requested at once; yields ``(prompt, completions)`` as prompts complete.

    Answers already in ``store`` (an earlier, interrupted attempt) are not asked for again; every answer that
    comes back is appended to ``store`` before anything else happens to it.
    """
    have = store.by_key()
    answers: dict[str, dict[int, Completion]] = {p["id"]: {} for p in prompts}
    for (pid, j), line in have.items():
        if pid in answers and j < sampling.n:
            answers[pid][j] = Completion(line["text"], bool(line.get("truncated")))
    for p in prompts:  # complete from an earlier attempt: no request at all
        if len(answers[p["id"]]) == sampling.n:
            yield p, [answers[p["id"]][j] for j in range(sampling.n)]
    seeds = [prompt_seed(seed, round_index, p["id"]) for p in prompts]
    requests = [
        q
        for q in generator.plan([p["prompt"] for p in prompts], sampling, seeds)
        if any(j not in answers[prompts[q.prompt]["id"]] for j in range(q.first, q.first + q.count))
    ]
    for request, completions in generator.stream([p["prompt"] for p in prompts], sampling, requests):
        p = prompts[request.prompt]
        new = {request.first + k: c for k, c in enumerate(completions)}
        store.append(
            [{"prompt_id": p["id"], "sample": j, "text": c.text, "truncated": c.truncated} for j, c in new.items()]
        )
        answers[p["id"]].update(new)
        if len(answers[p["id"]]) == sampling.n:
            yield p, [answers[p["id"]][j] for j in range(sampling.n)]


def in_chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----- the round's generator ---------------------------------------------------------------------------
def check_servers(args, served_model: str) -> None:
    """``generation_backend: server``: every replica answers ``/models`` and serves the model (one line if not)."""
    from chimed_trl.generation.openai_backend import check_server
    from chimed_trl.runfiles import check_env_name

    if args.generation_backend != "server":
        return
    check_env_name(args.generation_api_key_env, "generation_api_key_env")  # a pasted key is never echoed
    key = os.environ.get(args.generation_api_key_env)
    for url in args.base_urls:
        check_server(url, served_model, api_key=key)


def server_options(args) -> dict:
    return dict(
        honours_n=args.generation_honours_n, sampling_via=args.generation_sampling_via, show_progress=False,
        max_concurrency=args.generation_max_concurrency,
    )  # fmt: skip


@contextmanager
def open_generator(args, state, tokenizer, model, served_model: str, policy_dir=None, on_launch=None):
    """The round's generator. ``launch``: the main process starts every replica on ``policy_dir()`` (the round's
    policy, written by the main process only), all ranks get their addresses, and every replica is stopped
    afterwards, whatever happens; ``on_launch`` receives the launched replicas."""
    import torch
    from accelerate.utils import broadcast_object_list

    from chimed_trl.generation import LaunchedReplicas, OpenAIGenerator, TransformersGenerator

    if args.generation_backend == "transformers":
        model.eval()
        with torch.inference_mode():
            # shard=False: the trainer shards prompts across ranks itself (a collective inside would deadlock)
            yield TransformersGenerator(
                model, tokenizer, args.max_new_tokens, batch_size=args.generation_batch_size, shard=False,
                show_progress=False,
            )  # fmt: skip
        return
    options = server_options(args)
    if args.generation_backend == "server":
        yield OpenAIGenerator(
            args.base_urls, served_model, args.generation_api_key_env, args.max_new_tokens, **options
        )
        return
    servers, address = None, [None, None]
    try:
        if state.is_main_process:  # one set of replicas per round, on this round's policy, started by rank 0
            servers = LaunchedReplicas(args.generation_server, policy_dir())
            if on_launch is not None:
                on_launch(servers)
            servers.start()
            address = [servers.base_urls, servers.model]
        broadcast_object_list(address)
        yield OpenAIGenerator(address[0], address[1], args.generation_api_key_env, args.max_new_tokens, **options)
        state.wait_for_everyone()
    finally:
        if servers is not None:
            servers.stop()
