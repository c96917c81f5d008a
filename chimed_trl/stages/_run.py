"""The language-modelling stages of the regime, as the recipes call them.

``train_lm`` runs continued pre-training (``stage: pretrain``: plain documents, EOS between them,
BFD packing, loss on every token) or SFT (``stage: sft``: conversations, loss on assistant turns
only): seed, data, model, trainer, train, save. Each run writes ``resolved_config.yaml``,
``data_stats.json``, ``train.log`` and, last, ``metrics.json`` (with the whole loss history) in
``output_dir``. Rerunning follows :mod:`chimed_trl.runs`: a finished run is left alone, an unfinished
one resumes from its last complete checkpoint (same config only), ``overwrite_output_dir`` starts over.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from trl import SFTConfig, get_peft_config

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.data.mixtures import build_mixture
from chimed_trl.data.sources import resolve
from chimed_trl.errors import ConfigError, UserError
from chimed_trl.models import load_model, load_tokenizer
from chimed_trl.runs import (
    BOOKKEEPING_FILES,
    METRICS_FILE,
    RESUME_NEUTRAL_KEYS,
    FinishedRun,
    move_secrets_to_env,
    prepare_output_dir,
    remove_if_only_ours,
    resolve_config,
    write_json,
    write_resolved_config,
)
from chimed_trl.tiny import ensure_tiny
from chimed_trl.trainers import ChimedSFTTrainer

logger = logging.getLogger(__name__)
STAGE_FORMAT = {"pretrain": "text", "sft": "conversation"}
TRAIN_LOG = "train.log"
TRAIN_LOG_LOGGER = "chimed_trl.train_log"  # the logged metric dicts: to train.log only


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


class LogToFile(TrainerCallback):
    """The trainer's logged dicts (loss, learning rate, ...) as lines of ``train.log``."""

    def __init__(self):
        self.logger = logging.getLogger(TRAIN_LOG_LOGGER)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.logger.info("step %d: %s", state.global_step, json.dumps(logs))


def setup_logging(training_args: SFTConfig) -> None:
    """Our INFO lines (data table, packing efficiency) on the main process, warnings elsewhere."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("chimed_trl").setLevel(logging.INFO if training_args.should_log else logging.WARNING)


def log_to_file(output_dir: str) -> logging.Handler:
    """``output_dir/train.log``: our lines, transformers' and TRL's, and every logged metric (main process)."""
    import transformers

    handler = logging.FileHandler(Path(output_dir) / TRAIN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("chimed_trl", "trl", TRAIN_LOG_LOGGER):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger(TRAIN_LOG_LOGGER).setLevel(logging.INFO)
    logging.getLogger(TRAIN_LOG_LOGGER).propagate = False  # the console has the progress bar's own copy
    transformers.utils.logging.add_handler(handler)  # transformers' root logger does not propagate
    return handler


def close_log(handler: logging.Handler) -> None:
    import transformers

    for name in ("chimed_trl", "trl", TRAIN_LOG_LOGGER):
        logging.getLogger(name).removeHandler(handler)
    transformers.utils.logging.remove_handler(handler)
    handler.close()


def guarded_run(
    output_dir: str,
    sections: dict,
    overwrite: bool,
    body,
    neutral: frozenset = RESUME_NEUTRAL_KEYS,
    own_files: frozenset = BOOKKEEPING_FILES,
    write_config: bool = True,
) -> dict:
    """The bookkeeping every training stage shares, around ``body(resume_checkpoint) -> metrics``.

    A finished run (``metrics.json`` present, same config) is left alone and its metrics returned; a
    different config or a foreign directory is refused before any data is read; the main process holds the
    directory's lock for the whole run; ``train.log`` collects the run's log lines; ``resolved_config.yaml``
    (secrets redacted) is written before training; a run refused before any result (a bad data row, a model
    that will not load) leaves nothing behind in a directory it found missing or empty (``own_files`` are what the
    stage may have written by then). ``neutral`` keys may differ on a rerun; ``write_config=False`` leaves
    ``resolved_config.yaml`` to a body that writes it only once it has checked what it resumes.
    """
    state = PartialState()
    resolved = resolve_config(**sections)
    try:
        claim = prepare_output_dir(output_dir, resolved, overwrite, state.is_main_process, lock=True, neutral=neutral)
    except FinishedRun as e:
        logger.warning("%s", e)
        return json.loads((Path(output_dir).expanduser() / METRICS_FILE).read_text(encoding="utf-8"))
    state.wait_for_everyone()  # every rank has judged the directory before the main process writes into it
    handler = log_to_file(output_dir) if state.is_main_process else None
    refused = False
    try:
        if state.is_main_process and write_config:
            write_resolved_config(output_dir, resolved)
        if claim.resume:
            logger.info("resuming from %s", claim.resume)
        metrics = body(claim.resume)
        # leave together: a rank that exits while another still finishes a gloo/NCCL exchange aborts it
        state.wait_for_everyone()
        return metrics
    except UserError:
        refused = True
        raise
    finally:
        if handler is not None:
            close_log(handler)
        if claim.lock is not None:
            claim.lock.release()
        if refused and state.is_main_process and remove_if_only_ours(claim, own_files):
            logger.info("refused before any result: removed what this run wrote in %s", claim.out)


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


def run_stage(recipe: str, script_args, training_args, model_args, train) -> dict:
    """What every training recipe does around its ``train(script, training, model, resume, start) -> metrics``:
    log set-up, secrets out of the arguments (before anything pickles or prints them), then :func:`guarded_run`."""
    start = time.time()
    setup_logging(training_args)
    move_secrets_to_env(training_args)
    sections = dict(run={"recipe": recipe}, script=script_args, training=training_args, model=model_args)
    return guarded_run(
        training_args.output_dir,
        sections,
        script_args.overwrite_output_dir,
        lambda resume: train(script_args, training_args, model_args, resume, start),
    )


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
