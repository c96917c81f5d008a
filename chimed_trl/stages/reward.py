"""The reward-model stage: ranked data mixture -> listwise reward model (``recipes/reward.py``,
``python -m chimed_trl.stages.reward``).

``train_reward`` seeds, builds the (ranked) mixture, loads the reward model from a causal-LM checkpoint (the SFT
policy, with a fresh one-score head) or a sequence-classification one, trains with
:class:`~chimed_trl.trainers.ListwiseRewardTrainer`, saves the model (or LoRA adapter with its score head) and the
tokenizer, and writes ``resolved_config.yaml``, ``data_stats.json`` and, last, ``metrics.json`` in ``output_dir``.

Held-out scoring: by default ``test_size`` splits the training mixture. With ``eval_datasets`` the held-out set is
fixed instead (:mod:`chimed_trl.data.heldout`): original pairs, the same whatever the run trains on, scored every
``eval_steps`` beside a fixed sample of training records; the log history (``eval_heldout_<metric>``,
``eval_train_sample_<metric>``) goes into ``metrics.json`` and the pairs into ``heldout_pairs.jsonl``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import get_peft_config
from trl.trainer.reward_trainer import suppress_seqcls_warning

from chimed_trl.configs import ChimedModelConfig, DatasetsJSON, HeldOutSize, parse_sources
from chimed_trl.data.heldout import (
    check_eval_sources,
    load_heldout_pairs,
    parse_eval_sources,
    without_heldout_prompts,
    write_pairs,
)
from chimed_trl.data.mixtures import build_mixture
from chimed_trl.data.sources import resolve
from chimed_trl.errors import ConfigError, UserError
from chimed_trl.modeling.load import load_model, load_tokenizer
from chimed_trl.runfiles import METRICS_FILE, write_json
from chimed_trl.stages._run import run_stage
from chimed_trl.tiny import ensure_tiny
from chimed_trl.trainers.listwise_reward import ListwiseRewardConfig, ListwiseRewardTrainer

logger = logging.getLogger(__name__)


@dataclass
class RewardScriptArguments:
    """What the reward model trains on (everything not a trainer or model knob)."""

    datasets: list[DatasetsJSON] = field(
        default_factory=list,
        metadata={
            "help": "Ranked sources, in YAML or as JSON on the command line: "
            '[{"formatter": "ranked", "path": "ranked.jsonl"}] (cmd_reward, tiny_ranked, ranked, ...).'
        },
    )
    test_size: HeldOutSize = field(
        default=0.0, metadata={"help": "Held-out lists: a fraction in (0, 1) or a whole number >= 1 (1.0 refused)."}
    )
    dedup: bool = field(default=True, metadata={"help": "Exact de-duplication of whole lists across sources."})
    chat_template: str | None = field(
        default=None, metadata={"help": "chatml, chimed or a Jinja string; None keeps the tokenizer's template."}
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={"help": "Build the embedded tiny model at model_name_or_path when it is missing (offline runs)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output_dir holding a finished or different run of this recipe."},
    )
    eval_datasets: list[DatasetsJSON] = field(
        default_factory=list,
        metadata={
            "help": "A fixed held-out set (same syntax as datasets; count:/fraction: pick a subset), used instead of "
            "test_size: each record is reduced to its original pair (best vs worst response) and scored every "
            "eval_steps with pairwise accuracy, whatever the model trains on; training records sharing a held-out "
            "prompt are left out. Unset: the automatic test_size split."
        },
    )
    eval_seed: int = field(
        default=0,
        metadata={"help": "Seed of the held-out subset (count:/fraction: in eval_datasets), apart from `seed`."},
    )
    train_sample_size: int = field(
        default=64,
        metadata={
            "help": "With eval_datasets: this many training records (as trained: pairs or lists), fixed for the "
            "run, scored beside the held-out pairs every eval_steps (the train-accuracy curve); 0 for none."
        },
    )
    train_metrics_max_lists: int = field(
        default=1000,
        metadata={"help": "Final ranking metrics on (up to) this many training lists, beside the held-out ones."},
    )

    def __post_init__(self):
        self.datasets = parse_sources(self.datasets)
        self.eval_datasets = parse_eval_sources(self.eval_datasets)
        if self.eval_datasets and self.test_size:
            raise ConfigError("give eval_datasets (a fixed held-out set) or test_size (a split of datasets), not both")
        if isinstance(self.train_sample_size, bool) or self.train_sample_size < 0:
            raise ConfigError(f"train_sample_size must be a whole number >= 0, got {self.train_sample_size!r}")


def check_sources(script_args: RewardScriptArguments) -> None:
    if not script_args.datasets:
        raise UserError("the reward recipe needs ranked data: add at least one entry under `datasets:`")
    for i, source in enumerate(script_args.datasets):
        fmt = resolve(source)[1]
        if fmt != "ranked":
            raise UserError(f"datasets[{i}] ({source.label}) gives {fmt} records; the reward model trains on ranked")
    check_eval_sources(script_args.eval_datasets)


def lora_config(model_args: ChimedModelConfig):
    """TRL's LoRA config with ``task_type=SEQ_CLS``, so that PEFT trains and saves the ``score`` head."""
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        if peft_config.task_type not in (None, "SEQ_CLS"):
            logger.info("lora_task_type %s -> SEQ_CLS (the score head must train and be saved)", peft_config.task_type)
        peft_config.task_type = "SEQ_CLS"
    return peft_config


def _strip_prefix(metrics: dict) -> dict:
    return {key.split("_", 1)[1] if key.startswith(("eval_", "train_")) else key: v for key, v in metrics.items()}


def summarize(trainer: ListwiseRewardTrainer, wall_time: float, data_rows: list[dict]) -> dict:
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return {
        "stage": "reward",
        "loss_type": trainer.args.loss_type,
        "steps": trainer.state.global_step,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_finite": all(math.isfinite(x) for x in losses) if losses else None,
        "world_size": trainer.accelerator.num_processes,
        "wall_time_s": round(wall_time, 2),
        "data": data_rows,
        "data_report": trainer.data_report,
    }


HELDOUT, TRAIN_SAMPLE = (
    "heldout",
    "train_sample",
)  # the eval sets' names: eval_heldout_<metric>, eval_train_sample_<..>


def fixed_eval_sets(script_args: RewardScriptArguments, train_data) -> tuple:
    """``(train data, eval sets by name, held-out bookkeeping)`` for a run with ``eval_datasets``.

    The trainer scores every set of the dict at each evaluation and logs each under its own name, so the
    held-out and the train-sample curves land side by side in the log history."""
    from datasets import Dataset

    pairs = load_heldout_pairs(script_args.eval_datasets, script_args.eval_seed)
    train_data, left_out = without_heldout_prompts(train_data, pairs)
    if len(train_data) == 0:
        raise UserError("every training record shares a prompt with eval_datasets: nothing is left to train on")
    logger.info(
        "held-out: %d original pairs; %d training records with a held-out prompt left out", len(pairs), left_out
    )
    eval_sets = {HELDOUT: Dataset.from_list([{k: p[k] for k in ("prompt", "responses", "ranks")} for p in pairs])}
    n_sample = min(script_args.train_sample_size, len(train_data))
    if n_sample:
        eval_sets[TRAIN_SAMPLE] = train_data.select(range(n_sample))  # the mixture is shuffled: a seeded sample
    return train_data, eval_sets, {"pairs": pairs, "train_records_left_out": left_out, "train_sample": n_sample}


def final_heldout_metrics(trainer: ListwiseRewardTrainer, heldout: dict) -> dict:
    """The trained model on the held-out pairs (``eval``, as without eval_datasets) and the whole log history."""
    prefix = f"eval_{HELDOUT}"
    final = trainer.evaluate(trainer.eval_dataset[HELDOUT], metric_key_prefix=prefix)
    return {
        "eval": {key[len(prefix) + 1 :]: v for key, v in final.items() if key.startswith(prefix + "_")},
        "heldout": {
            "pairs": len(heldout["pairs"]),
            "pair_ids": [p["id"] for p in heldout["pairs"]],
            "train_records_left_out": heldout["train_records_left_out"],
            "train_sample_records": heldout["train_sample"],
        },
        "log_history": trainer.state.log_history,  # per-step held-out and train-sample curves
    }


def train_reward(
    script_args: RewardScriptArguments, training_args: ListwiseRewardConfig, model_args: ChimedModelConfig
) -> dict:
    return run_stage("reward", script_args, training_args, model_args, _train)


def _train(script_args, training_args, model_args, resume: str | None, start: float) -> dict:
    set_seed(training_args.seed)  # before the model: the fresh score head is drawn from it
    if script_args.build_tiny_model:
        with PartialState().main_process_first():
            ensure_tiny(model_args.model_name_or_path)  # any tiny build; never a user model
    check_sources(script_args)
    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args, script_args.chat_template, trust_remote_code=trust)
    stats_dir = training_args.output_dir if PartialState().is_main_process else None
    data, data_rows = build_mixture(
        script_args.datasets, training_args.seed, script_args.test_size, script_args.dedup, stats_dir
    )
    train_data, eval_data, heldout = data["train"], data.get("test"), None
    if script_args.eval_datasets:
        train_data, eval_data, heldout = fixed_eval_sets(script_args, train_data)
    with suppress_seqcls_warning():  # a causal-LM checkpoint: lm_head unused, score head new (expected)
        model = load_model(model_args, task="reward", trust_remote_code=trust)
    trainer = ListwiseRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    metrics = summarize(trainer, time.time() - start, data_rows)
    n_train = min(script_args.train_metrics_max_lists, len(trainer.train_dataset))
    if n_train:
        metrics["train"] = _strip_prefix(trainer.evaluate(trainer.train_dataset.select(range(n_train))))
    if heldout is not None:
        metrics.update(final_heldout_metrics(trainer, heldout))
    elif "test" in data:
        metrics["eval"] = _strip_prefix(trainer.evaluate())
    if trainer.is_world_process_zero():
        if heldout is not None:
            write_pairs(training_args.output_dir, heldout["pairs"])
        tokenizer.save_pretrained(training_args.output_dir)
        write_json(Path(training_args.output_dir) / METRICS_FILE, metrics)  # last: its presence = stage finished
    return metrics


ARGUMENT_TYPES = (RewardScriptArguments, ListwiseRewardConfig, ChimedModelConfig)  # what the YAML is parsed into


def main(script_args, training_args, model_args) -> dict:
    return train_reward(script_args, training_args, model_args)


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
