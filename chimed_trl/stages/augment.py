"""Augment ranked lists with *responders'* answers (the ChiMed-GPT reward data: accepted > GPT-4 > GPT-3.5 > rejected).

Each input record (CMD-Reward pairs or any ranked file, read through the data layer) goes to one or
more responders: an OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, ``transformers serve``) or a
local transformers model. Each answer is inserted at its responder's ``position`` and labelled in
``sources``; the records go to ``output_dir/ranked.jsonl`` (a :class:`~chimed_trl.jsonl_store.JsonlStore`: whole
lines, flushed and fsynced per batch). ``metrics.json`` is written last, only when every prompt is done.
Endpoint requests go through the package's one OpenAI-compatible client (``max_concurrency`` in flight, the
``openai`` client's ``max_retries`` with backoff; :mod:`chimed_trl.stages.augment_responders`).

    python -m chimed_trl.stages.augment --config recipes/tiny/augment.yaml    # = python recipes/augment_rewards.py

``position`` is the number of the input's responses ranked *above* the answer (:mod:`chimed_trl.data.augment`
places the answers: 0 = best of all, 1, the default, = right after the human-accepted answer).

Resume: each record is keyed by a hash of its prompt and input responses (the ``id`` field of the
output); a rerun skips ids already in ``ranked.jsonl`` or ``dropped.jsonl`` and repairs a torn last
line. An empty answer, or one equal (after normalisation) to a response already in the list, is
counted and handled by a policy: ``drop_record`` (logged to ``dropped.jsonl``), ``skip_responder``
(the list goes on without that answer) or ``error``.

API keys are read from the environment variable a responder names in ``api_key_env``; the key
itself is never stored on a config, logged or written. Example (runs offline on the tiny model)::

    from chimed_trl.stages.augment import AugmentArguments, augment_rankings

    metrics = augment_rankings(AugmentArguments(
        output_dir="runs/tiny/augment",
        datasets=[{"card": "cmd_reward", "path": "pairs.jsonl"}],
        responders=[{"name": "sft", "model": "runs/tiny/sft"}, {"name": "base", "model": "runs/tiny-model"}],
    ))
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chimed_trl.configs import DatasetsJSON, parse_sources
from chimed_trl.data.augment import answer_problem, insert_answers, normalise, record_id
from chimed_trl.data.records import DataError
from chimed_trl.data.sources import iter_records
from chimed_trl.errors import UserError
from chimed_trl.jsonl_store import JsonlStore
from chimed_trl.stages.augment_responders import (
    APIResponder,
    LocalResponder,
    ResponderConfig,
    check_endpoints,
    parse_responders,
)

logger = logging.getLogger(__name__)

POLICIES = ("drop_record", "skip_responder", "error")
OUTPUT_FILE, DROPPED_FILE, SPEC_FILE = "ranked.jsonl", "dropped.jsonl", "augment_spec.json"
# settings of how requests are made, not of what is asked: a finished or resumed run may change them
REQUEST_KEYS = frozenset(
    "batch_size max_concurrency max_retries backoff_initial_s backoff_max_s request_timeout_s".split()
)


@dataclass
class AugmentArguments:
    """What ``recipes/augment_rewards.py`` reads from its YAML (every key a field; CLI flags override)."""

    output_dir: str = field(default="runs/augment", metadata={"help": "Where ranked.jsonl and metrics.json go."})
    datasets: list[DatasetsJSON] = field(
        default_factory=list,
        metadata={"help": "Ranked sources: [{card|formatter, path, ...}] (cmd_reward, ranked); JSON on the CLI."},
    )
    responders: list[str] = field(
        default_factory=list,
        metadata={
            "help": "[{name, model | base_url+api_model+api_key_env, position, max_new_tokens, temperature, ...}]; "
            "on the CLI: one JSON list (or one JSON object per responder) replacing the YAML's."
        },
    )
    responder_model: list[str] = field(
        default_factory=list, metadata={"help": "NAME=PATH ...: set the local model of named responders."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local model for responders that name neither `model` nor `base_url`."}
    )
    input_sources: list[str] | None = field(
        default=None, metadata={"help": "Labels of the input responses, e.g. [human_chosen, human_rejected]."}
    )
    limit: int | None = field(default=None, metadata={"help": "Only the first N input records (quick runs)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per written (fsynced) batch."})
    max_concurrency: int = field(default=8, metadata={"help": "Endpoint requests in flight at once."})
    max_retries: int = field(default=5, metadata={"help": "Retries per request on 429/5xx/timeouts/refused."})
    # deprecated keys, kept so that configs keep parsing: requests go through the package's one OpenAI-compatible
    # client, whose retries back off as the openai client does (0.5 s doubling up to 8 s, jittered; Retry-After wins)
    backoff_initial_s: float | None = field(
        default=None, metadata={"help": "Deprecated, ignored (the openai client's backoff)."}
    )
    backoff_max_s: float | None = field(
        default=None, metadata={"help": "Deprecated, ignored (the openai client's backoff)."}
    )
    request_timeout_s: float = field(default=120.0, metadata={"help": "Timeout of one endpoint request."})
    empty_answer_policy: str = field(default="drop_record", metadata={"help": "drop_record|skip_responder|error"})
    duplicate_answer_policy: str = field(default="drop_record", metadata={"help": "drop_record|skip_responder|error"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start over in a finished output_dir."})
    seed: int = 0

    def __post_init__(self):
        for key in ("backoff_initial_s", "backoff_max_s"):
            if getattr(self, key) is not None:  # said once, never silently dropped
                logger.warning("%s is deprecated and ignored: retries back off as the openai client does", key)
        self.datasets = parse_sources(self.datasets)
        self.responders = parse_responders(self.responders)
        for assignment in self.responder_model:
            name, sep, path = assignment.partition("=")
            match = [r for r in self.responders if r.name == name]
            if not sep or not path or not match:
                names = ", ".join(r.name for r in self.responders)
                raise UserError(f"responder_model: expected NAME=PATH with NAME among ({names}), got {assignment!r}")
            match[0].model, match[0].base_url = path, None
        for i, r in enumerate(self.responders):
            if not r.model and not r.base_url:
                if not self.model_name_or_path:
                    raise UserError(f"responders[{i}] ({r.name}): give `model`, `base_url` or model_name_or_path")
                r.model = self.model_name_or_path
        for key in ("empty_answer_policy", "duplicate_answer_policy"):
            if getattr(self, key) not in POLICIES:
                raise UserError(f"{key}: expected one of {', '.join(POLICIES)}, got {getattr(self, key)!r}")
        for key in ("batch_size", "max_concurrency"):
            if getattr(self, key) < 1:
                raise UserError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.max_retries < 0:
            raise UserError(f"max_retries: must be >= 0, got {self.max_retries}")

    def validate(self) -> None:
        if not self.datasets:
            raise UserError("datasets: give at least one ranked source (e.g. {card: cmd_reward, path: ...})")
        if not self.responders:
            raise UserError("responders: give at least one responder")


# ---------------------------------------------------------------- output files
def claim_output_dir(args: AugmentArguments, resolved: dict):
    """The run-directory contract (:func:`chimed_trl.rundir.prepare_output_dir`, lock held), then the resume
    check: the responders, positions and policies that wrote ``ranked.jsonl`` must be this run's."""
    from chimed_trl.rundir import RESUME_NEUTRAL_KEYS, prepare_output_dir
    from chimed_trl.runfiles import write_json

    neutral = RESUME_NEUTRAL_KEYS | REQUEST_KEYS
    claim = prepare_output_dir(args.output_dir, resolved, args.overwrite_output_dir, lock=True, neutral=neutral)
    out = claim.out
    spec = {
        "responders": [r.spec() for r in args.responders],
        "input_sources": args.input_sources,
        "empty_answer_policy": args.empty_answer_policy,
        "duplicate_answer_policy": args.duplicate_answer_policy,
    }
    spec_path = out / SPEC_FILE
    if spec_path.exists() and (out / OUTPUT_FILE).exists():
        previous = json.loads(spec_path.read_text(encoding="utf-8"))
        if previous != spec:
            claim.lock.release()
            raise UserError(
                f"{spec_path}: this run's responders/positions/policies differ from the ones that wrote "
                f"{out / OUTPUT_FILE} ({previous} vs {spec}); resume with the same ones, set "
                "overwrite_output_dir: true to start again (the old run moves to .previous/<time>/), or use "
                "another output_dir"
            )
    write_json(spec_path, spec)
    return claim


# ---------------------------------------------------------------- the run
@dataclass
class Item:
    record: dict
    rid: str
    where: str
    number: int  # 1-based position among the run's input records


def load_items(args: AugmentArguments) -> tuple[list[Item], int]:
    items, seen, duplicates = [], set(), 0
    for j, source in enumerate(args.datasets):
        for i, record in enumerate(iter_records(source)):
            where = f"datasets[{j}] ({source.label}) record {i + 1}"
            rid = record_id(record)
            if rid in seen:  # the same prompt with the same responses: augmenting it twice would duplicate it
                duplicates += 1
                continue
            seen.add(rid)
            if args.input_sources is not None and len(args.input_sources) != len(record["responses"]):
                raise DataError(
                    where,
                    "responses",
                    f"has {len(record['responses'])} responses but input_sources names {len(args.input_sources)}",
                )
            items.append(Item(record, rid, where, len(items) + 1))
            if args.limit and len(items) >= args.limit:
                return items, duplicates
    if duplicates:
        logger.warning("skipped %d input records that repeat an earlier one (same prompt and responses)", duplicates)
    return items, duplicates


def _labels(args: AugmentArguments, record: dict) -> list[str]:
    if args.input_sources is not None:
        return list(args.input_sources)
    return list(record.get("sources") or [f"input_{i}" for i in range(len(record["responses"]))])


class Augmenter:
    """Asks every responder for each prompt, batch by batch, and writes the augmented lists."""

    def __init__(self, args: AugmentArguments, out: Path):
        self.args, self.out = args, out
        self.responders = [
            APIResponder(r, args) if r.kind == "api" else LocalResponder(r, args) for r in args.responders
        ]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="augment")
        self.run_counts = Counter(written=0, dropped=0)
        self.total = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def ask(self, batch: list[Item], batch_index: int) -> tuple[list[list[str | None]], dict[int, str]]:
        """answers[item][responder]; failures {item index: message} (the item's answers are then incomplete)."""
        answers: list[list[str | None]] = [[None] * len(self.responders) for _ in batch]
        failures: dict[int, str] = {}
        prompts, rids = [i.record["prompt"] for i in batch], [i.rid for i in batch]
        # the endpoints are asked from a thread (one responder after the other, so at most max_concurrency requests
        # are in flight in all) while the local models answer here
        endpoints = self.pool.submit(self._ask_endpoints, prompts, rids)
        for r, responder in enumerate(self.responders):
            if isinstance(responder, LocalResponder):
                for b, text in enumerate(responder.answer_batch(prompts, batch_index)):
                    answers[b][r] = text
        for r, (texts, failure) in endpoints.result().items():
            for b, text in enumerate(texts):
                answers[b][r] = text
                if text is None:
                    failures.setdefault(b, f"responder {self.responders[r].config.name!r} failed: {failure}")
        return answers, failures

    def _ask_endpoints(self, prompts: list, rids: list[str]) -> dict[int, tuple[list[str | None], str | None]]:
        """{responder index: (answers, failure)} of every endpoint responder, one responder at a time."""
        return {
            r: responder.answer_batch(prompts, rids)
            for r, responder in enumerate(self.responders)
            if isinstance(responder, APIResponder)
        }

    def build(self, item: Item, answers: list[str]) -> tuple[dict | None, dict | None]:
        """(augmented record, None) or (None, dropped row), applying the empty/duplicate policies."""
        record = item.record
        seen = {normalise(t) for t in record["responses"]}
        kept, problems = [], []
        for responder, text in zip(self.responders, answers):
            problem = answer_problem(text, seen)
            if problem:
                responder.stats.add(**{problem: 1})
                problems.append((responder.config.name, problem))
                continue
            seen.add(normalise(text))
            kept.append((responder, text))
        for name, problem in problems:
            policy = getattr(self.args, f"{problem}_answer_policy")
            if policy == "error":
                raise UserError(
                    f"{item.where} (prompt {item.number}/{self.total}, id {item.rid}): responder {name!r} gave an "
                    f"{problem} answer ({problem}_answer_policy: error)"
                )
            if policy == "drop_record":
                return None, {"id": item.rid, "where": item.where, "reason": f"{problem} answer", "responder": name}
        for responder, _ in kept:
            responder.stats.add(kept=1)
        labels = _labels(self.args, record)
        return insert_answers(record, [(r.config, t) for r, t in kept], labels, item.where) | {"id": item.rid}, None

    def run(self, todo: list[Item]) -> None:
        from tqdm.auto import tqdm

        size = self.args.batch_size
        with tqdm(total=len(todo), desc="augment", unit="prompt") as bar:
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                answers, failures = self.ask(batch, start // size)
                written, dropped = [], []
                try:
                    for b, item in enumerate(batch):
                        if b not in failures:
                            record, drop = self.build(item, answers[b])
                            (written if record else dropped).append(record or drop)
                finally:  # whatever finished is kept, so a rerun only asks again for the rest
                    JsonlStore(self.out / DROPPED_FILE).append(dropped)
                    JsonlStore(self.out / OUTPUT_FILE).append(written)
                    self.run_counts.update(written=len(written), dropped=len(dropped))
                bar.update(len(batch) - len(failures))
                if failures:
                    b = min(failures)
                    item = batch[b]
                    raise UserError(
                        f"{item.where} (prompt {item.number}/{self.total}, id {item.rid}): {failures[b]}; "
                        f"{len(failures)} prompt(s) of this batch failed, every finished record is saved in "
                        f"{self.out / OUTPUT_FILE}: rerun the same command to resume"
                    )


def file_summary(out: Path) -> dict:
    records, dropped = JsonlStore(out / OUTPUT_FILE).read(), JsonlStore(out / DROPPED_FILE).read()
    return {
        "records": len(records),
        "dropped": len(dropped),
        "list_sizes": dict(sorted(Counter(str(len(r["responses"])) for r in records).items())),
        "sources": dict(Counter(s for r in records for s in r.get("sources") or [])),
        "dropped_reasons": dict(Counter(f"{d['responder']}: {d['reason']}" for d in dropped)),
    }


def augment_rankings(args: AugmentArguments) -> dict:
    """Augment every input list with the responders' answers; returns (and writes last) ``metrics.json``.

    The output directory follows :mod:`chimed_trl.rundir`: a finished run with the same settings is left alone
    (its metrics returned), ``overwrite_output_dir`` moves an old run to ``.previous/<time>/``, a directory
    this package did not create is refused whatever the flags say."""
    from chimed_trl.rundir import BOOKKEEPING_FILES, FinishedRun, remove_if_only_ours
    from chimed_trl.runfiles import METRICS_FILE, resolve_config, write_json, write_resolved_config

    args.validate()
    start = time.time()
    check_endpoints(args)
    try:
        claim = claim_output_dir(args, resolve_config(run={"recipe": "augment"}, augment=args))
    except FinishedRun as e:
        logger.warning("%s", e)
        return json.loads((Path(args.output_dir).expanduser() / METRICS_FILE).read_text(encoding="utf-8"))
    out = claim.out
    augmenter = None
    try:
        write_resolved_config(out, resolve_config(run={"recipe": "augment"}, augment=args))
        items, duplicate_inputs = load_items(args)
        # the stores of an interrupted run: a torn last line is cut off, every whole line is a finished prompt
        done = {row["id"] for row in JsonlStore(out / OUTPUT_FILE).repair() + JsonlStore(out / DROPPED_FILE).repair()}
        todo = [item for item in items if item.rid not in done]
        logger.info("%d prompts: %d already done, %d to ask", len(items), len(items) - len(todo), len(todo))
        augmenter = Augmenter(args, out)
        augmenter.total = len(items)
        augmenter.run(todo)
    except UserError:
        # a refusal before any answer was written leaves nothing behind in a directory this run found empty
        claim.lock.release()
        remove_if_only_ours(claim, BOOKKEEPING_FILES | {SPEC_FILE})
        raise
    finally:
        if augmenter is not None:
            augmenter.close()
        claim.lock.release()
    metrics = {
        "stage": "augment",
        "output": str(out / OUTPUT_FILE),
        "prompts": len(items),
        "duplicate_inputs": duplicate_inputs,
        "already_done": len(items) - len(todo),
        "this_run": dict(augmenter.run_counts),
        "policies": {"empty": args.empty_answer_policy, "duplicate": args.duplicate_answer_policy},
        "responders": {
            r.config.name: {
                "kind": r.config.kind,
                "position": r.config.position if r.config.position is not None else 1,
            }
            | dict(r.stats.counts)
            for r in augmenter.responders
        },
        "retries": sum(r.stats.counts["retries"] for r in augmenter.responders),
        "tokens": {
            "prompt": sum(r.stats.counts["prompt_tokens"] for r in augmenter.responders),
            "completion": sum(r.stats.counts["completion_tokens"] for r in augmenter.responders),
        },
        "file": file_summary(out),
        "wall_time_s": round(time.time() - start, 2),
    }
    write_json(out / METRICS_FILE, metrics)  # last: its presence means every prompt is done
    return metrics


__all__ = ["AugmentArguments", "ResponderConfig", "augment_rankings", "main", "parse_responders"]
ARGUMENT_TYPES = (AugmentArguments,)  # what the YAML is parsed into


def main(augment_args) -> dict:
    return augment_rankings(augment_args)


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
