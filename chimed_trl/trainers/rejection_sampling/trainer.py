"""Rejection-sampling (best-of-n, top-k) fine-tuning, as in ChiMed-GPT, resumable, on any generation backend.

Each round ``r``: the current policy samples ``num_samples`` answers per prompt; a reward model (its own
tokenizer and chat template) or a Python function, and/or ``reward_funcs`` callables (TRL GRPO style, weighted
by ``reward_weights``: :class:`~chimed_trl.scoring.CombinedReward`), score them; the ``top_k`` per prompt that
pass the filters are kept; the policy is fine-tuned on them (loss on the answer only) with
:class:`~chimed_trl.trainers.ChimedSFTTrainer`; the next round samples from the updated policy.

Outputs in ``output_dir``::

    round_<r>/generated.jsonl server backends: each answer as it came back (prompt_id, sample, text, truncated)
    round_<r>/samples.jsonl   one line per (prompt, sample): prompt_id, sample, text, reward, kept, truncated,
                              over_length, backend (+ rewards: each source's value, with reward_funcs)
    round_<r>/ranked.jsonl    the kept answers as ranked records (retrain the listwise reward model on them)
    round_<r>/policy/         the fine-tuned policy (full weights or the LoRA adapter)
    round_<r>/stats.json      reward mean/std/min/max (all, kept), kept/truncated shares, duplicates dropped,
                              over-long prompts and answers, generation/scoring/training seconds, samples/s,
                              reward_func_means (each reward source's mean, with reward_funcs)
    reward_by_round.png       reward distribution per round
    <policy files>            the final policy
    metrics.json              per-round stats, written last

Resume: the stores are read back on start (:mod:`.store`); prompts already scored, and answers already
generated, are not generated again (a torn last line or a half-written prompt is dropped first), and a
round whose policy and stats exist is skipped. Each prompt is sampled with its own seed
(:func:`~.sampling.prompt_seed`), so the samples do not depend on how prompts are split across processes
or batched, nor on the order a server answers in.

Answers that hit ``max_new_tokens`` (``truncated``) and answers whose prompt + answer exceed ``max_length``
(``over_length``) are never kept, unless ``keep_truncated`` (truncated only). Over-long prompts follow
``prompt_overflow``. The pieces: :mod:`.config`, :mod:`.sampling` (and the round's generator),
:mod:`.selection`, :mod:`.store`, :mod:`.policy` (the SFT update), :mod:`.report` (ranked records, plot); this
module runs the rounds.

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

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from chimed_trl.errors import UserError
from chimed_trl.generation.base import Completion
from chimed_trl.modeling.load import ensure_pad_token
from chimed_trl.runfiles import move_secrets_to_env, resolve_config, write_json
from chimed_trl.scoring import CombinedReward, build_scorer, import_reward_func
from chimed_trl.trainers.rejection_sampling.claim import RUN_FILE, OutputClaim  # noqa: F401 (RUN_FILE: the old home)
from chimed_trl.trainers.rejection_sampling.config import RejectionSamplingConfig
from chimed_trl.trainers.rejection_sampling.policy import PolicyUpdate
from chimed_trl.trainers.rejection_sampling.report import plot_rewards, write_ranked
from chimed_trl.trainers.rejection_sampling.sampling import (
    check_prompts,
    check_servers,
    fit_prompts,
    generate_local,
    in_chunks,
    open_generator,
    sampling_params,
    stream_server,
    token_count,
)
from chimed_trl.trainers.rejection_sampling.selection import round_stats, select
from chimed_trl.trainers.rejection_sampling.store import GenerationStore, SampleStore

logger = logging.getLogger(__name__)


def new_timings() -> dict:
    return {"generation_seconds": 0.0, "scoring_seconds": 0.0, "generated_samples": 0}


class RejectionSamplingTrainer(PolicyUpdate, OutputClaim):
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
        reward_funcs: list | None = None,
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
        check_servers(self.args, self.served_model)  # before any model loads: a dead server is one line, not later
        prompts = check_prompts(list(train_dataset or []))
        if self.args.include_reference and any(not p["reference"] for p in prompts):
            missing = next(i for i, p in enumerate(prompts) if not p["reference"])
            raise UserError(f"train_dataset[{missing}]: include_reference is on but the prompt has no 'reference'")
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer = processing_class
        ensure_pad_token(self.tokenizer)
        a = self.args
        self.prompts, self.prompt_counts = fit_prompts(
            prompts, self.tokenizer, a.max_length, a.max_new_tokens, a.prompt_overflow
        )
        self.build_reward(reward_model, reward_funcs, reward_processing_class)
        self.output_dir = Path(self.args.output_dir)
        self.round_metrics: list[dict] = []
        self.last_server = None  # the launched generation server of the latest round (stopped after it)
        self.timings = new_timings()  # of the round in progress, this attempt (a resumed round counts its own)
        self._claim_output_dir()

    def build_reward(self, reward_model, reward_funcs, reward_processing_class) -> None:
        """The reward model (path, model or function) and the ``reward_funcs``, combined by ``reward_weights``."""
        a = self.args
        reward_model = reward_model if reward_model is not None else a.reward_model_path
        specs = reward_funcs if reward_funcs is not None else a.reward_funcs or []
        funcs = [import_reward_func(f, f"reward_funcs[{i}]") for i, f in enumerate(specs)]  # before any load
        self.reward_name, scorer = None, None
        if reward_model is not None:
            self.reward_name = (
                str(reward_model)
                if isinstance(reward_model, str | Path)
                else getattr(reward_model, "__qualname__", type(reward_model).__name__)
            )
            scorer = build_scorer(
                reward_model,
                reward_processing_class,
                a.reward_batch_size,
                a.reward_max_length,
                dtype=self.model_init_kwargs["dtype"],  # the dtype the policy is loaded in, not always fp32
            )
            if hasattr(scorer, "model"):
                scorer.model.to(a.device)
        self.scorer = scorer
        self.reward = CombinedReward(scorer, "reward_model", funcs, a.reward_weights, self.tokenizer, self.reward_name)

    @property
    def served_model(self) -> str:
        return self.args.generation_model or self.model_path

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
        self.timings = new_timings()
        self.sample_and_score(r, model)
        lines = SampleStore(self.round_dir(r) / "samples.jsonl", self._lines_per_prompt).read()
        stats = {"round": r, "policy": self.policy_source(r), **round_stats(lines, self.args.dedup_samples)}
        stats.update(self.prompt_counts)
        model = model if model is not None else self.load_policy(r)
        started = time.perf_counter()
        trainer = self.fine_tune(r, model, lines)
        stats.update(self.timings, training_seconds=time.perf_counter() - started)
        seconds = stats["generation_seconds"]  # of this attempt: a resumed round counts what it generated itself
        stats["samples_per_second"] = stats["generated_samples"] / seconds if stats["generated_samples"] else None
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
        bar = tqdm(total=len(pending), desc=f"round {r}: sample+score", disable=not self.state.is_main_process)
        with self.generator(r, model) as generator:
            if self.args.generation_backend == "transformers":
                self._sample_local(r, generator, pending, store, bar)
            else:
                self._sample_server(r, generator, pending, store, bar)
        bar.close()
        self.state.wait_for_everyone()

    def _sample_local(self, r: int, generator, pending: list[dict], store: SampleStore, bar) -> None:
        """Each process: one ``generate`` per ``generation_batch_size`` prompts of its shard, scored, gathered."""
        step = self.state.num_processes * self.args.generation_batch_size
        for start in range(0, len(pending), step):
            with self.state.split_between_processes(pending[start : start + step]) as local:
                lines = self.sample_batch(r, generator, local)  # each rank: its own shard, sampled and scored
            self._write_gathered(store, lines)
            bar.update(len(pending[start : start + step]))

    def _sample_server(self, r: int, generator, pending: list[dict], store: SampleStore, bar) -> None:
        """The main process keeps every request in flight; each chunk of finished prompts is scored by all ranks.

        A request that fails for good stops the round on every rank with one line; every answer that came
        back is already in ``generated.jsonl``, so the rerun asks only for the rest.
        """
        world = self.state.num_processes
        step = world * self.args.generation_batch_size
        generated = GenerationStore(self.round_dir(r) / "generated.jsonl")
        chunks = None
        if self.state.is_main_process:
            generated.repair()
            sampling = sampling_params(self.args)
            finished = stream_server(generator, pending, sampling, r, self.args.seed, generated)
            chunks = in_chunks(finished, step)
        for _ in range(-(-len(pending) // step)):
            message = [self._next_chunk(chunks, generated) if chunks is not None else None]
            if world > 1:
                broadcast_object_list(message)  # the chunk (or the error line) from the main process
            if isinstance(message[0], str):
                raise UserError(message[0])
            with self.state.split_between_processes(message[0]) as chunk:
                started = time.perf_counter()
                lines = self.score_and_select(r, [p for p, _ in chunk], {p["id"]: c for p, c in chunk})
                self.timings["scoring_seconds"] += time.perf_counter() - started
            self._write_gathered(store, lines)
            bar.update(len(message[0]))

    def _next_chunk(self, chunks, generated: GenerationStore):
        """The next chunk of finished prompts, or the one line that says why the round stopped."""
        import openai

        started = time.perf_counter()
        try:
            chunk = next(chunks)
        except (openai.APIError, UserError) as err:
            from chimed_trl.generation.openai_backend import failure_line

            line = failure_line(err, self.args.base_urls or "the launched server", self.served_model)
            count = len(generated.read())
            return f"{line}; the {count} answers that came back are kept in {generated.path}: rerun to resume"
        finally:
            self.timings["generation_seconds"] += time.perf_counter() - started
            # answers from an earlier, interrupted attempt are not counted: samples/s is this attempt's
            self.timings["generated_samples"] = generated.appended
        return chunk

    def _write_gathered(self, store: SampleStore, lines: list[dict]) -> None:
        gathered = gather_object(lines)  # every rank takes part, even with an empty shard
        if self.state.is_main_process:
            store.append(gathered)

    def sample_batch(self, r: int, generator, prompts: list[dict]) -> list[dict]:
        """The scored lines of ``prompts``, sampled in one local ``generate`` call."""
        started = time.perf_counter()
        completions = generate_local(generator, prompts, sampling_params(self.args), r, self.args.seed)
        self.timings["generation_seconds"] += time.perf_counter() - started
        self.timings["generated_samples"] += len(prompts) * self.args.num_samples
        started = time.perf_counter()
        lines = self.score_and_select(r, prompts, completions)
        self.timings["scoring_seconds"] += time.perf_counter() - started
        return lines

    def score_and_select(self, r: int, prompts: list[dict], completions: dict) -> list[dict]:
        """Score every candidate of ``prompts`` (``completions``: prompt id -> samples) and flag the kept ones."""
        a = self.args
        candidates = []  # (prompt, sample index, source, Completion)
        for p in prompts:
            candidates += [(p, i, "policy", c) for i, c in enumerate(completions[p["id"]])]
            if a.include_reference:
                candidates.append((p, -1, "reference", Completion(p["reference"])))
        rewards, per_source = self.score_candidates(candidates)
        lines = []
        for p in prompts:
            rows = [(c, rw) for c, rw in zip(candidates, rewards) if c[0] is p]
            over_length = [self.too_long_to_train(p, c.text) for (_, _, _, c), _ in rows]
            eligible = [
                (a.keep_truncated or not c.truncated) and not long for ((*_, c), _), long in zip(rows, over_length)
            ]
            kept = select(
                [c[3].text for c, _ in rows], [rw for _, rw in rows], a.top_k, a.min_reward, a.min_margin,
                a.dedup_samples, eligible,
            )  # fmt: skip
            for ((_, sample, source, c), reward), keep, long in zip(rows, kept, over_length):
                lines.append(
                    {"round": r, "prompt_id": p["id"], "sample": sample, "source": source, "text": c.text,
                     "reward": reward, "kept": keep, "truncated": c.truncated, "over_length": long,
                     "backend": a.generation_backend}
                )  # fmt: skip
        if self.reward.funcs:  # each source's value beside the combined reward (stats recomputable from the lines)
            sources = [{name: values[i] for name, values in per_source.items()} for i in range(len(candidates))]
            order = {(c[0]["id"], c[1]): i for i, c in enumerate(candidates)}
            for line in lines:
                line["rewards"] = sources[order[line["prompt_id"], line["sample"]]]
        return lines

    def too_long_to_train(self, prompt: dict, answer: str) -> bool:
        """Prompt + answer longer than ``max_length``: the SFT trainer would cut it, so it is never kept."""
        if self.args.max_length is None:
            return False
        messages = prompt["prompt"] + [{"role": "assistant", "content": answer}]
        return token_count(self.tokenizer, messages, False) > self.args.max_length

    def score(self, prompts: list, completions: list[str]) -> list[float | None]:
        """The combined reward of each (prompt, answer)."""
        return self.reward(prompts, completions)[0] if completions else []

    def score_candidates(self, candidates: list[tuple]) -> tuple[list[float | None], dict[str, list]]:
        """The combined reward of each ``(prompt, sample, source, Completion)``, and each source's values."""
        if not candidates:
            return [], {}
        columns = dict(
            reference=[p["reference"] for p, *_ in candidates], prompt_id=[p["id"] for p, *_ in candidates],
            source=[c[2] for c in candidates], truncated=[c[3].truncated for c in candidates],
        )  # fmt: skip
        return self.reward([c[0]["prompt"] for c in candidates], [c[3].text for c in candidates], **columns)

    def generator(self, r: int, model):
        def remember(servers):
            self.last_server = servers

        return open_generator(
            self.args, self.state, self.tokenizer, model, self.served_model, lambda: self.generation_model_dir(r),
            remember,
        )  # fmt: skip

    # ----- outputs ---------------------------------------------------------------------------------
    def write_ranked(self, r: int, lines: list[dict]) -> int:
        return write_ranked(self.round_dir(r) / "ranked.jsonl", self.prompts, lines)

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
        rewards = [
            [x["reward"] for x in SampleStore(self.round_dir(r) / "samples.jsonl", 0).read()
             if x["source"] == "policy" and x["reward"] is not None]
            for r in range(len(self.round_metrics))
        ]  # fmt: skip
        kept = [m.get("kept_reward_mean") for m in self.round_metrics]
        return plot_rewards(self.output_dir / "reward_by_round.png", rewards, kept)

    # ----- bookkeeping -----------------------------------------------------------------------------
    def round_dir(self, r: int) -> Path:
        return self.output_dir / f"round_{r}"
