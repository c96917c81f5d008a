"""The language-modelling stages of the regime: continued pre-training and SFT (one trainer, two data shapes).

``train_lm`` runs continued pre-training (``stage: pretrain``: plain documents, EOS between them,
BFD packing, loss on every token) or SFT (``stage: sft``: conversations, loss on assistant turns
only): seed, data, model, trainer, train, save. Each run writes ``resolved_config.yaml``,
``data_stats.json``, ``train.log`` and, last, ``metrics.json`` (with the whole loss history) in
``output_dir``. Rerunning follows :mod:`chimed_trl.rundir`: a finished run is left alone, an unfinished
one resumes from its last complete checkpoint (same config only), ``overwrite_output_dir`` starts over.
:mod:`chimed_trl.stages.pretrain` and :mod:`chimed_trl.stages.sft` are the two stages' entry points.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import SFTConfig, get_peft_config

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.data.mixtures import build_mixture
from chimed_trl.data.sources import resolve
from chimed_trl.errors import ConfigError
from chimed_trl.modeling.load import load_model, load_tokenizer
from chimed_trl.runfiles import METRICS_FILE, write_json
from chimed_trl.stages._run import LogToFile, run_stage
from chimed_trl.tiny import ensure_tiny
from chimed_trl.trainers import ChimedSFTTrainer

logger = logging.getLogger(__name__)
STAGE_FORMAT = {"pretrain": "text", "sft": "conversation"}
ARGUMENT_TYPES = (ChimedScriptArguments, SFTConfig, ChimedModelConfig)  # what a pretrain/sft YAML is parsed into


def check_stage(script_args: ChimedScriptArguments, training_args: SFTConfig) -> None:
    """Reject configs whose data or loss settings contradict the stage, or that no trainer could run."""
    expected = STAGE_FORMAT[script_args.stage]
    for source in script_args.datasets:
        fmt = resolve(source)[1]
        if fmt != expected:
            raise ConfigError(
                f"stage {script_args.stage!r} trains on {expected} records; source {source.label} is {fmt}"
            )
    if training_args.max_length is not None and training_args.max_length < 1:
        raise ConfigError(
            f"max_length must be a number of tokens >= 1 (or null for no limit), got {training_args.max_length}"
        )
    if script_args.stage == "pretrain":
        if training_args.assistant_only_loss:
            raise ConfigError("stage 'pretrain' trains on all tokens: set assistant_only_loss: false")
        if not training_args.packing:
            logger.warning("stage 'pretrain' without packing: each document gets its own padded row")
    elif not training_args.assistant_only_loss:
        logger.warning("stage 'sft' with assistant_only_loss: false trains on user and system tokens too")


def loss_history(trainer: ChimedSFTTrainer) -> list[dict]:
    """Every logged training loss of the whole run (the trainer state is restored on resume)."""
    return [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]


def summarize(trainer: ChimedSFTTrainer, stage: str, data_rows: list[dict]) -> dict:
    counters = trainer.run_counters()  # whole-run totals, carried across resumes
    history = loss_history(trainer)
    losses = [h["loss"] for h in history]
    return {
        "stage": stage,
        "steps": trainer.state.global_step,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_finite": all(math.isfinite(x) for x in losses) if losses else None,
        "tokens": counters["tokens"],
        "packing": trainer.packing_stats,
        "world_size": trainer.accelerator.num_processes,
        "batches_per_rank": counters["batches_per_rank"],
        "wall_time_s": round(counters["wall_time_s"], 2),
        "data": data_rows,
        "loss_history": history,
    }


def train_lm(
    script_args: ChimedScriptArguments,
    training_args: SFTConfig,
    model_args: ChimedModelConfig,
    expected_stage: str | None = None,
) -> dict:
    """Train one stage; ``expected_stage`` lets a recipe refuse a config written for the other stage."""
    if expected_stage and script_args.stage != expected_stage:
        raise ConfigError(f"this recipe runs stage {expected_stage!r}; the config says stage: {script_args.stage!r}")
    return run_stage(script_args.stage, script_args, training_args, model_args, _train)


def _train(script_args, training_args, model_args, resume: str | None, start: float) -> dict:
    set_seed(training_args.seed)
    if script_args.build_tiny_model:
        with PartialState().main_process_first():  # rank 0 builds; the others then find it built
            ensure_tiny(model_args.model_name_or_path)  # reuses a tiny build of any seed, never a user's model
    check_stage(script_args, training_args)

    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args, script_args.chat_template, trust_remote_code=trust)
    # every rank builds the same mixture (same seed); only the main process writes data_stats.json
    stats_dir = training_args.output_dir if PartialState().is_main_process else None
    data, data_rows = build_mixture(
        script_args.datasets, training_args.seed, script_args.test_size, script_args.dedup, stats_dir
    )
    model = load_model(model_args, trust_remote_code=trust)
    trainer = ChimedSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data.get("test"),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[LogToFile()],
    )
    trainer.run_start_time = start
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    metrics = summarize(trainer, script_args.stage, data_rows)
    if training_args.eval_strategy != "no" and "test" in data:
        metrics["eval"] = trainer.evaluate()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        trainer.create_model_card(model_name=Path(training_args.output_dir).name)
        write_json(Path(training_args.output_dir) / METRICS_FILE, metrics)  # last: its presence = finished
    return metrics
