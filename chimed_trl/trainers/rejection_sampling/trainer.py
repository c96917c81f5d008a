"""Rejection-sampling (best-of-n, top-k) fine-tuning, as in ChiMed-GPT, resumable, on any generation backend.

Each round ``r``: the current policy samples ``num_samples`` answers per prompt; a reward model (its own
tokenizer and chat template) or a Python function scores them; the ``top_k`` per prompt that pass the
filters are kept; the policy is fine-tuned on them (loss on the answer only) with
:class:`~chimed_trl.trainers.ChimedSFTTrainer`; the next round samples from the updated policy.

Outputs in ``output_dir``::

    round_<r>/samples.jsonl   one line per (prompt, sample): prompt_id, sample, text, reward, kept, backend
    round_<r>/ranked.jsonl    the kept answers as ranked records (retrain the listwise reward model on them)
    round_<r>/policy/         the fine-tuned policy (full weights or the LoRA adapter)
    round_<r>/stats.json      reward mean/min/max (all, kept), acceptance, distinct-2, mean length
    reward_by_round.png       reward distribution per round
    <policy files>            the final policy
    metrics.json              per-round stats, written last

Resume: the store is read back on start; prompts already generated and scored are not generated again
(a torn last line or a half-written prompt is dropped first), and a round whose policy and stats exist
is skipped. Each prompt is sampled with its own seed (:func:`prompt_seed`), so the samples do not depend
on how prompts are split across processes or batched.

Example::

    from chimed_trl import RejectionSamplingConfig, RejectionSamplingTrainer

    def reward(prompts, completions):  # or a reward-model directory
        return [float("心内科" in c) for c in completions]

    args = RejectionSamplingConfig(output_dir="runs/rs", num_rounds=2, num_samples=4, top_k=1, max_new_tokens=32,
                                   bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[])
    prompts = [{"prompt": [{"role": "user", "content": "胸闷应该挂哪个科？"}]}]
    trainer = RejectionSamplingTrainer("runs/tiny-model", reward_model=reward, args=args, train_dataset=prompts)
    metrics = trainer.train()
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm
from trl import SFTConfig

from chimed_trl.errors import UserError
from chimed_trl.runs import (
    RESOLVED_CONFIG,
    RESUME_NEUTRAL_KEYS,
    config_differences,
    last_checkpoint,
    move_secrets_to_env,
    resolve_config,
    write_atomic,
    write_json,
    write_resolved_config,
)
from chimed_trl.scoring import build_scorer, check_scores

logger = logging.getLogger(__name__)
BACKENDS = ("transformers", "server", "launch")
RUN_FILE = "rejection_sampling_run.json"
# settings that do not change what a rerun samples, scores or trains (where and how fast it runs)
RERUN_NEUTRAL_KEYS = RESUME_NEUTRAL_KEYS | frozenset(
    "generation_batch_size generation_base_url generation_api_key_env generation_server reward_batch_size".split()
)


@dataclass
class RejectionSamplingConfig(SFTConfig):
    """``SFTConfig`` (the fine-tuning of each round) plus the sampling, scoring and selection settings."""

    num_rounds: int = field(default=1, metadata={"help": "Sample -> score -> keep -> fine-tune rounds."})
    num_samples: int = field(default=4, metadata={"help": "Answers sampled per prompt per round."})
    top_k: int = field(default=1, metadata={"help": "Answers kept per prompt (best first), after the filters."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    sampling_top_k: int = field(
        default=0, metadata={"help": "Sample among the k most likely tokens (0: all; `top_k` is the answers kept)."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    min_reward: float | None = field(default=None, metadata={"help": "Drop answers scoring below this."})
    min_margin: float | None = field(
        default=None, metadata={"help": "Keep only answers scoring at least this much above the prompt's mean."}
    )
    dedup_samples: bool = field(default=True, metadata={"help": "Drop exact duplicate answers of a prompt."})
    include_reference: bool = field(
        default=False, metadata={"help": "The dataset's reference answer competes as one more candidate."}
    )
    generation_backend: str = field(
        default="transformers",
        metadata={"help": "transformers (in process), server (generation_base_url) or launch (generation_server)."},
    )
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per process between store writes."})
    generation_base_url: str | None = field(default=None, metadata={"help": "server: OpenAI-compatible URL."})
    generation_model: str | None = field(default=None, metadata={"help": "server: the served model's name."})
    generation_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "server: the environment variable holding the key."}
    )
    generation_server: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": 'launch: {command: "vllm serve {model} --port {port} ...", ready_timeout: 600}.'},
    )
    generation_honours_n: bool = field(
        default=False,
        metadata={"help": "server/launch: one request with `n` per prompt (vLLM, SGLang); else one per sample."},
    )
    generation_sampling_via: str = field(
        default="openai",
        metadata={
            "help": "server/launch: `openai` (temperature/top_p fields: vLLM, SGLang) or `generation_config` "
            "(extra_body, what `transformers serve` needs to sample at all)."
        },
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model directory (full or LoRA SEQ_CLS adapter)."}
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Pairs per reward-model forward pass."})
    reward_max_length: int = field(default=2048, metadata={"help": "Tokens kept (from the end) per scored pair."})
    write_ranked: bool = field(default=True, metadata={"help": "Write round_<r>/ranked.jsonl of kept answers."})
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Loss on the kept answer only (needs a template with generation markers)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.generation_server, str):
            self.generation_server = json.loads(self.generation_server)
        if self.num_rounds < 1 or self.num_samples < 1 or self.top_k < 1:
            raise UserError("num_rounds, num_samples and top_k must be >= 1")
        if self.top_k > self.num_samples + int(self.include_reference):
            raise UserError(
                f"top_k={self.top_k} is larger than num_samples={self.num_samples}: "
                "there are not that many answers to keep per prompt"
            )
        if self.temperature <= 0:
            raise UserError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if self.generation_backend not in BACKENDS:
            raise UserError(f"generation_backend must be one of {BACKENDS}, got {self.generation_backend!r}")
        if self.generation_backend == "server" and not self.generation_base_url:
            raise UserError("generation_backend: server needs generation_base_url")
        if self.generation_backend == "server" and self.num_rounds > 1:
            # an external server keeps serving the initial policy: rounds >= 1 would sample a stale model
            raise UserError(
                f"generation_backend: server with num_rounds={self.num_rounds}: the external server would serve the "
                "initial policy in every round; use generation_backend: launch (a server started on each round's "
                "policy) or num_rounds: 1"
            )
        if self.generation_backend == "launch":
            self._check_generation_server()

    def _check_generation_server(self) -> None:
        """The launch command is checked here, before any model loads (a bad template would fail after)."""
        from chimed_trl.generation.server import check_command_template

        server = self.generation_server or {}
        if not isinstance(server, dict) or not isinstance(server.get("command"), str):
            raise UserError('generation_backend: launch needs generation_server: {command: "... {model} {port}"}')
        unknown = sorted(set(server) - {"command", "ready_timeout"})
        if unknown:
            raise UserError(f"generation_server: unknown keys {unknown}; it takes command, ready_timeout")
        check_command_template(server["command"])


def prompt_seed(seed: int, round_index: int, prompt_id: str) -> int:
    """The sampling seed of one prompt in one round: independent of rank, batch and order."""
    digest = hashlib.blake2b(f"{seed}:{round_index}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def prompt_id(prompt: list[dict]) -> str:
    return hashlib.blake2b(json.dumps(prompt, ensure_ascii=False).encode(), digest_size=8).hexdigest()


def select(texts: list[str], rewards: list[float], top_k: int, min_reward=None, min_margin=None, dedup=True):
    """Kept flags of one prompt's candidates: drop empty answers, duplicates and those under the floors, then top-k.

    The margin is taken over the prompt's mean reward; ties keep the earlier candidate.
    """
    mean = statistics.fmean(rewards) if rewards else 0.0
    seen, eligible = set(), []
    for i, (text, reward) in enumerate(zip(texts, rewards)):
        if not text.strip() or (dedup and text in seen):
            continue
        seen.add(text)
        if min_reward is not None and reward < min_reward:
            continue
        if min_margin is not None and reward < mean + min_margin:
            continue
        eligible.append(i)
    best = sorted(eligible, key=lambda i: (-rewards[i], i))[:top_k]
    return [i in best for i in range(len(texts))]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct character n-grams over all n-grams (characters: Chinese has no spaces)."""
    grams = [t[i : i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _summary(values: list[float], prefix: str) -> dict:
    if not values:
        return {f"{prefix}_mean": None, f"{prefix}_min": None, f"{prefix}_max": None}
    return {f"{prefix}_mean": statistics.fmean(values), f"{prefix}_min": min(values), f"{prefix}_max": max(values)}


def round_stats(lines: list[dict]) -> dict:
    samples = [x for x in lines if x["source"] == "policy"]
    kept = [x for x in lines if x["kept"]]
    texts = [x["text"] for x in samples]
    return {
        "prompts": len({x["prompt_id"] for x in lines}),
        "samples": len(samples),
        "kept": len(kept),
        "kept_reference": sum(x["source"] == "reference" for x in kept),
        **_summary([x["reward"] for x in samples], "reward"),
        **_summary([x["reward"] for x in kept], "kept_reward"),
        "acceptance_rate": sum(x["kept"] for x in samples) / len(samples) if samples else 0.0,
        "distinct_2": distinct_n(texts, 2),
        "mean_length": statistics.fmean(len(t) for t in texts) if texts else 0.0,
        "empty_answers": sum(not t.strip() for t in texts),
    }


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


def parse_lines(text: str) -> list[dict]:
    # split on "\n" only: str.splitlines() also splits on U+2028, U+0085, ..., which sampled text may hold
    # and json.dumps(ensure_ascii=False) leaves unescaped
    return [json.loads(x) for x in text.split("\n") if x.strip()]


class SampleStore:
    """``round_<r>/samples.jsonl``: whole lines, appended by the main process, flushed and fsynced per batch."""

    def __init__(self, path: Path, lines_per_prompt: int):
        self.path, self.lines_per_prompt = path, lines_per_prompt

    def repair(self) -> None:
        """Drop a torn last line and any prompt with fewer lines than a complete one (a killed write)."""
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        lines = parse_lines(complete.decode("utf-8"))
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["prompt_id"]] = counts.get(line["prompt_id"], 0) + 1
        whole = [x for x in lines if counts[x["prompt_id"]] == self.lines_per_prompt]
        if len(whole) != len(lines) or len(complete) != len(raw):
            logger.warning("%s: dropped %d partial lines of an interrupted run", self.path, len(lines) - len(whole))
            write_atomic(self.path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in whole))

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return parse_lines(self.path.read_text(encoding="utf-8"))

    def append(self, lines: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
            f.flush()
            os.fsync(f.fileno())


class RejectionSamplingTrainer:
    """Best-of-n / top-k rejection-sampling fine-tuning (see the module docstring)."""

    def __init__(
        self,
        model,
        reward_model=None,
        args: RejectionSamplingConfig | None = None,
        train_dataset=None,
        processing_class=None,
        reward_processing_class=None,
        peft_config=None,
        model_init_kwargs: dict | None = None,
        callbacks=None,
        resolved_config: dict | None = None,
    ):
        self.args = args or RejectionSamplingConfig(output_dir="rejection_sampling")
        move_secrets_to_env(self.args)  # the SFT trainer of each round pickles these args into training_args.bin
        # every setting of the run (the recipe passes its script/training/model sections): a rerun must match it
        self.resolved_config = resolved_config or resolve_config(training=self.args)
        # a path, or a loaded model (used as is in round 0; its name_or_path names it in the run fingerprint)
        self.initial_model = model if isinstance(model, torch.nn.Module) else None
        self.model_path = str(model.name_or_path if self.initial_model is not None else model)
        self.model_init_kwargs = {"dtype": torch.float32, "use_safetensors": True, **(model_init_kwargs or {})}
        self.peft_config, self.callbacks = peft_config, callbacks
        _ = self.args.device  # sets up the process group (gloo/NCCL) the way the SFT trainer will
        self.state = PartialState()
        self.prompts = check_prompts(list(train_dataset or []))
        if self.args.include_reference and any(not p["reference"] for p in self.prompts):
            missing = next(i for i, p in enumerate(self.prompts) if not p["reference"])
            raise UserError(f"train_dataset[{missing}]: include_reference is on but the prompt has no 'reference'")
        reward_model = reward_model if reward_model is not None else self.args.reward_model_path
        if reward_model is None:
            raise UserError("no reward: give reward_model_path (a reward-model directory) or a reward function")
        self.reward_name = (
            str(reward_model)
            if isinstance(reward_model, str | Path)
            else getattr(reward_model, "__qualname__", type(reward_model).__name__)
        )
        self.scorer = build_scorer(
            reward_model, reward_processing_class, self.args.reward_batch_size, self.args.reward_max_length
        )
        if hasattr(self.scorer, "model"):
            self.scorer.model.to(self.args.device)
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer = processing_class
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.output_dir = Path(self.args.output_dir)
        self.round_metrics: list[dict] = []
        self.last_server = None  # the launched generation server of the latest round (stopped after it)
        self._claim_output_dir()

    # ----- the run ---------------------------------------------------------------------------------
    def train(self) -> dict:
        for r in range(self.args.num_rounds):
            stats_path = self.round_dir(r) / "stats.json"
            if stats_path.exists() and self._has_model(self.round_dir(r) / "policy"):
                logger.info("round %d is finished: skipped", r)
                self.round_metrics.append(json.loads(stats_path.read_text()))
                continue
            self.round_metrics.append(self.run_round(r))
        return self._finish()

    def run_round(self, r: int) -> dict:
        model = self.load_policy(r) if self.args.generation_backend == "transformers" else None
        self.sample_and_score(r, model)
        lines = SampleStore(self.round_dir(r) / "samples.jsonl", self._lines_per_prompt).read()
        stats = {"round": r, "policy": self.policy_source(r), **round_stats(lines)}
        model = model if model is not None else self.load_policy(r)
        trainer = self.fine_tune(r, model, lines)
        stats["train_loss"] = trainer.state.log_history[-1].get("train_loss") if trainer else None
        if trainer is not None:  # the same figures through the trainer's loggers (tensorboard, wandb, ...)
            trainer.log({f"rejection_sampling/{k}": v for k, v in stats.items() if isinstance(v, int | float)})
        if self.state.is_main_process:
            if self.args.write_ranked:
                stats["ranked_records"] = self.write_ranked(r, lines)
            write_json(self.round_dir(r) / "stats.json", stats)  # last: its presence = round finished
        self.state.wait_for_everyone()
        logger.info("round %d: %s", r, {k: v for k, v in stats.items() if k != "round"})
        return stats

    # ----- generation + scoring --------------------------------------------------------------------
    @property
    def _lines_per_prompt(self) -> int:
        return self.args.num_samples + int(self.args.include_reference)

    def sample_and_score(self, r: int, model) -> None:
        store = SampleStore(self.round_dir(r) / "samples.jsonl", self._lines_per_prompt)
        if self.state.is_main_process:
            store.repair()
        self.state.wait_for_everyone()
        done = {x["prompt_id"] for x in store.read()}
        pending = [p for p in self.prompts if p["id"] not in done]
        if done:
            logger.info("round %d: %d prompts already sampled and scored, %d to go", r, len(done), len(pending))
        if not pending:
            return
        world, rank = self.state.num_processes, self.state.process_index
        step = world * self.args.generation_batch_size
        bar = tqdm(total=len(pending), desc=f"round {r}: sample+score", disable=not self.state.is_main_process)
        with self.generator(r, model) as generator:
            for start in range(0, len(pending), step):
                local = pending[start : start + step][rank::world]  # each rank: its own shard, sampled and scored
                lines = self.sample_batch(r, generator, local)
                gathered = gather_object(lines)  # every rank takes part, even with an empty shard
                if self.state.is_main_process:
                    store.append(gathered)
                bar.update(len(pending[start : start + step]))
        bar.close()
        self.state.wait_for_everyone()

    def sample_batch(self, r: int, generator, prompts: list[dict]) -> list[dict]:
        from chimed_trl.generation import SamplingParams

        a = self.args
        candidates = []  # (prompt, sample index, source, text)
        for p in prompts:  # one call per prompt: its seed alone decides its samples
            sampling = SamplingParams(
                a.num_samples,
                a.temperature,
                a.top_p,
                a.max_new_tokens,
                prompt_seed(a.seed, r, p["id"]),
                top_k=a.sampling_top_k,
            )
            texts = generator.generate([p["prompt"]], sampling)[0]
            if len(texts) != a.num_samples:
                raise RuntimeError(
                    f"the {a.generation_backend} backend returned {len(texts)} of {a.num_samples} samples"
                )
            candidates += [(p, i, "policy", t) for i, t in enumerate(texts)]
            if a.include_reference:
                candidates.append((p, -1, "reference", p["reference"]))
        rewards = self.score([c[0]["prompt"] for c in candidates], [c[3] for c in candidates])
        lines = []
        for p in prompts:
            rows = [(c, rw) for c, rw in zip(candidates, rewards) if c[0] is p]
            kept = select(
                [c[3] for c, _ in rows], [rw for _, rw in rows], a.top_k, a.min_reward, a.min_margin, a.dedup_samples
            )
            for (c, reward), keep in zip(rows, kept):
                lines.append(
                    {"round": r, "prompt_id": p["id"], "sample": c[1], "source": c[2], "text": c[3],
                     "reward": reward, "kept": keep, "backend": a.generation_backend}
                )  # fmt: skip
        return lines

    def score(self, prompts: list, completions: list[str]) -> list[float]:
        if not completions:
            return []
        return check_scores(self.scorer(prompts, completions), len(completions), f"reward {self.reward_name}")

    @contextmanager
    def generator(self, r: int, model):
        from chimed_trl.generation import LaunchedServer, OpenAIGenerator, TransformersGenerator

        a = self.args
        if a.generation_backend == "transformers":
            model.eval()
            with torch.inference_mode():
                # shard=False: this trainer shards prompts across ranks itself (a collective inside would deadlock)
                yield TransformersGenerator(
                    model, self.tokenizer, a.max_new_tokens, batch_size=a.num_samples, shard=False, show_progress=False
                )
            return
        if a.generation_backend == "server":
            yield OpenAIGenerator(a.generation_base_url, a.generation_model or self.model_path,
                                  a.generation_api_key_env, a.max_new_tokens, **self.server_options())  # fmt: skip
            return
        server, address = None, [None, None]
        try:
            if self.state.is_main_process:  # one server per round, on this round's policy, started by rank 0
                server = LaunchedServer(
                    a.generation_server["command"], self.generation_model_dir(r),
                    ready_timeout=float(a.generation_server.get("ready_timeout", 600)),
                )  # fmt: skip
                server.start()
                self.last_server = server
                address = [server.base_url, server.model]
            broadcast_object_list(address)
            yield OpenAIGenerator(
                address[0], address[1], a.generation_api_key_env, a.max_new_tokens, **self.server_options()
            )
            self.state.wait_for_everyone()
        finally:
            if server is not None:
                server.stop()

    def server_options(self) -> dict:
        a = self.args
        return dict(honours_n=a.generation_honours_n, sampling_via=a.generation_sampling_via, show_progress=False)

    def generation_model_dir(self, r: int) -> str:
        """The weights a launched server loads: the initial model or the last round's policy (adapters merged)."""
        source = self.policy_source(r)
        if r == 0 and self.initial_model is not None and not self._has_model(Path(source)):
            source = str(self.round_dir(0) / "initial_policy")  # a model object without a directory: save it once
            if not self._has_model(Path(source)):
                self.initial_model.save_pretrained(source, safe_serialization=True)
                self.tokenizer.save_pretrained(source)
        if not (Path(source) / "adapter_config.json").exists():
            return source
        merged = self.round_dir(r) / "merged_policy"
        if not self._has_model(merged):
            model = self.load_policy(r).merge_and_unload()
            model.save_pretrained(merged, safe_serialization=True)
            self.tokenizer.save_pretrained(merged)
        return str(merged)

    # ----- fine-tuning -----------------------------------------------------------------------------
    def load_policy(self, r: int):
        """The policy that samples in round ``r``: the initial model, or the policy round ``r - 1`` saved."""
        from transformers import AutoModelForCausalLM

        source = self.policy_source(r)
        if r == 0 and self.initial_model is not None:
            return self.initial_model.to(self.args.device)
        if (Path(source) / "adapter_config.json").exists():
            from peft import PeftConfig, PeftModel

            base = PeftConfig.from_pretrained(source).base_model_name_or_path
            model = AutoModelForCausalLM.from_pretrained(base, **self.model_init_kwargs)
            return PeftModel.from_pretrained(model, source, is_trainable=True)
        model = AutoModelForCausalLM.from_pretrained(source, **self.model_init_kwargs)
        return model.to(self.args.device)

    def sft_dataset(self, lines: list[dict]):
        from datasets import Dataset

        by_id = {p["id"]: p for p in self.prompts}
        rows = [
            {"messages": by_id[x["prompt_id"]]["prompt"] + [{"role": "assistant", "content": x["text"]}]}
            for x in lines
            if x["kept"] and x["prompt_id"] in by_id
        ]
        return Dataset.from_list(rows) if rows else None

    def fine_tune(self, r: int, model, lines: list[dict]):
        policy_dir = self.round_dir(r) / "policy"
        dataset = self.sft_dataset(lines)
        if dataset is None:
            logger.warning("round %d kept no answers: the policy is carried over unchanged", r)
            if self.state.is_main_process:
                model.save_pretrained(policy_dir, safe_serialization=True)
                self.tokenizer.save_pretrained(policy_dir)
            return None
        trainer = self.build_sft_trainer(r, model, dataset)
        trainer.train(resume_from_checkpoint=last_checkpoint(trainer.args.output_dir))
        trainer.save_model(str(policy_dir))
        if self.state.is_main_process:
            self.tokenizer.save_pretrained(policy_dir)
        return trainer

    def build_sft_trainer(self, r: int, model, dataset):
        """The package's SFT trainer on the kept answers; checkpoints in ``round_<r>/train`` (resumable)."""
        from chimed_trl.trainers.sft import ChimedSFTTrainer

        args = copy.copy(self.args)
        args.output_dir = str(self.round_dir(r) / "train")
        # a policy loaded from a saved adapter keeps training that adapter; a full model gets a new one
        peft_config = None if hasattr(model, "peft_config") else self.peft_config
        return ChimedSFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=self.tokenizer,
            peft_config=peft_config, callbacks=self.callbacks,
        )  # fmt: skip

    # ----- outputs ---------------------------------------------------------------------------------
    def write_ranked(self, r: int, lines: list[dict]) -> int:
        """Kept answers, best first, as ranked records (a prompt needs two kept answers to make one)."""
        by_id = {p["id"]: p for p in self.prompts}
        kept: dict[str, list[dict]] = {}
        for x in lines:  # one response per text: with dedup_samples off, equal answers can both be kept
            if x["kept"] and all(y["text"] != x["text"] for y in kept.get(x["prompt_id"], [])):
                kept.setdefault(x["prompt_id"], []).append(x)
        records = []
        for pid, rows in kept.items():
            rows.sort(key=lambda x: -x["reward"])
            if len(rows) >= 2 and pid in by_id:
                records.append(
                    {"prompt": by_id[pid]["prompt"], "responses": [x["text"] for x in rows],
                     "sources": [x["source"] for x in rows], "rewards": [x["reward"] for x in rows]}
                )  # fmt: skip
        write_atomic(
            self.round_dir(r) / "ranked.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records)
        )
        return len(records)

    def _finish(self) -> dict:
        if self.state.is_main_process:
            final = self.round_dir(self.args.num_rounds - 1) / "policy"
            for item in final.iterdir():
                if item.is_file():
                    shutil.copy2(item, self.output_dir / item.name)
            self.plot()
            metrics = {"rounds": self.round_metrics, "world_size": self.state.num_processes}
            write_json(self.output_dir / "metrics.json", metrics)  # last: its presence = stage finished
        self.state.wait_for_everyone()
        return {"rounds": self.round_metrics, "world_size": self.state.num_processes}

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rewards = [
            [
                x["reward"]
                for x in SampleStore(self.round_dir(r) / "samples.jsonl", 0).read()
                if x["source"] == "policy"
            ]
            for r in range(len(self.round_metrics))
        ]
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rewards) + 2), 3.5))
        ax.boxplot(rewards, showmeans=True)
        ax.set_xticks(range(1, len(rewards) + 1), [str(r) for r in range(len(rewards))])
        kept = [m.get("kept_reward_mean") for m in self.round_metrics]
        ax.plot(range(1, len(kept) + 1), kept, "o--", label="mean of kept answers")
        ax.set_xlabel("round (samples of the policy entering the round)")
        ax.set_ylabel("reward")
        ax.set_title("Reward of sampled answers by round")
        ax.legend(loc="best")
        fig.tight_layout()
        path = self.output_dir / "reward_by_round.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    # ----- bookkeeping -----------------------------------------------------------------------------
    def policy_source(self, r: int) -> str:
        return self.model_path if r == 0 else str(self.round_dir(r - 1) / "policy")

    def round_dir(self, r: int) -> Path:
        return self.output_dir / f"round_{r}"

    @staticmethod
    def _has_model(path: Path) -> bool:
        return (path / "adapter_config.json").exists() or (path / "config.json").exists()

    def _fingerprint(self) -> dict:
        """What decides the samples: a rerun with other values must not mix its samples into this store."""
        a = self.args
        keys = ("seed", "num_samples", "top_k", "sampling_top_k", "temperature", "top_p", "max_new_tokens", "min_reward",
                "min_margin", "dedup_samples", "include_reference")  # fmt: skip
        prompts = json.dumps([[p["id"], p["prompt"], p["reference"]] for p in self.prompts], ensure_ascii=False)
        prompts_hash = hashlib.blake2b(prompts.encode(), digest_size=16).hexdigest()
        return {"model": self.model_path, "reward": str(self.reward_name), "prompts": prompts_hash,
                **{k: getattr(a, k) for k in keys}}  # fmt: skip

    def _rerun_differences(self) -> list[str]:
        """What differs from the run already in ``output_dir``: fingerprint keys, then config keys (old -> new)."""
        previous = json.loads((self.output_dir / RUN_FILE).read_text())
        current = self._fingerprint()
        changed = sorted(k for k in previous if previous[k] != current.get(k))
        saved_path = self.output_dir / RESOLVED_CONFIG
        if saved_path.is_file():
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
            diffs = config_differences(saved, self.resolved_config, RERUN_NEUTRAL_KEYS)
            changed += [d for d in diffs if d.split(":")[0].split(".")[-1] not in changed]
        return changed

    def _claim_output_dir(self) -> None:
        """Write only into a directory this run created (or a rerun of the same run), never over other data."""
        problem = [None]
        if self.state.is_main_process:  # one process decides, so a race cannot make the ranks disagree
            marker = self.output_dir / RUN_FILE
            if marker.exists():
                changed = self._rerun_differences()
                if changed:
                    problem[0] = (
                        f"{self.output_dir} holds a rejection-sampling run with other settings "
                        f"({'; '.join(changed)}); rerun with its settings or use a new output_dir"
                    )
            elif self.output_dir.exists() and any(self.output_dir.iterdir()):
                problem[0] = f"output_dir {self.output_dir} is not empty and is not a rejection-sampling run"
            else:
                write_json(marker, self._fingerprint())
            if problem[0] is None:  # a fresh run or the same run again: the config on disk is this run's
                write_resolved_config(self.output_dir, self.resolved_config)
        if self.state.num_processes > 1:
            broadcast_object_list(problem)
        if problem[0]:
            raise UserError(problem[0])
