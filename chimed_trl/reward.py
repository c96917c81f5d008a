"""The reward-model stage: ranked data mixture -> listwise reward model, as ``recipes/reward.py`` calls it.

``train_reward`` seeds, builds the (ranked) mixture, loads the reward model from a causal-LM checkpoint (the SFT
policy, with a fresh one-score head) or a sequence-classification one, trains with
:class:`~chimed_trl.trainers.ListwiseRewardTrainer`, saves the model (or LoRA adapter with its score head) and the
tokenizer, and writes ``resolved_config.yaml``, ``data_stats.json`` and, last, ``metrics.json`` in ``output_dir``.
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
from chimed_trl.data.mixtures import build_mixture
from chimed_trl.data.sources import resolve
from chimed_trl.errors import UserError
from chimed_trl.models import load_model, load_tokenizer
from chimed_trl.runs import METRICS_FILE, write_json
from chimed_trl.stages import run_stage
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
    train_metrics_max_lists: int = field(
        default=1000,
        metadata={"help": "Final ranking metrics on (up to) this many training lists, beside the held-out ones."},
    )

    def __post_init__(self):
        self.datasets = parse_sources(self.datasets)


def check_sources(script_args: RewardScriptArguments) -> None:
    if not script_args.datasets:
        raise UserError("the reward recipe needs ranked data: add at least one entry under `datasets:`")
    for i, source in enumerate(script_args.datasets):
        fmt = resolve(source)[1]
        if fmt != "ranked":
            raise UserError(f"datasets[{i}] ({source.label}) gives {fmt} records; the reward model trains on ranked")


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
    with suppress_seqcls_warning():  # a causal-LM checkpoint: lm_head unused, score head new (expected)
        model = load_model(model_args, task="reward", trust_remote_code=trust)
    trainer = ListwiseRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data.get("test"),
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    metrics = summarize(trainer, time.time() - start, data_rows)
    n_train = min(script_args.train_metrics_max_lists, len(trainer.train_dataset))
    if n_train:
        metrics["train"] = _strip_prefix(trainer.evaluate(trainer.train_dataset.select(range(n_train))))
    if "test" in data:
        metrics["eval"] = _strip_prefix(trainer.evaluate())
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        write_json(Path(training_args.output_dir) / METRICS_FILE, metrics)  # last: its presence = stage finished
    return metrics
