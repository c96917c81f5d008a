"""What every stage driver does around its own work: logging set-up, ``train.log``, and :func:`guarded_run`.

:func:`guarded_run` is the bookkeeping of a stage run (claim the output directory under :mod:`chimed_trl.rundir`,
hold its lock, write ``resolved_config.yaml``, resume, clean up after a refusal); :func:`run_stage` adds the
log set-up and moves secrets out of the arguments first. The drivers in this package (``lm``, ``reward``,
``rejection_sampling``, ``ablation_report``) call one of the two.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

from chimed_trl.errors import UserError
from chimed_trl.rundir import (
    BOOKKEEPING_FILES,
    RESUME_NEUTRAL_KEYS,
    FinishedRun,
    prepare_output_dir,
    remove_if_only_ours,
)
from chimed_trl.runfiles import (
    METRICS_FILE,
    RESOLVED_CONFIG,
    move_secrets_to_env,
    resolve_config,
    write_resolved_config,
)

logger = logging.getLogger(__name__)
TRAIN_LOG = "train.log"
TRAIN_LOG_LOGGER = "chimed_trl.train_log"  # the logged metric dicts: to train.log only


class LogToFile(TrainerCallback):
    """The trainer's logged dicts (loss, learning rate, ...) as lines of ``train.log``."""

    def __init__(self):
        self.logger = logging.getLogger(TRAIN_LOG_LOGGER)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.logger.info("step %d: %s", state.global_step, json.dumps(logs))


def setup_logging(training_args) -> None:
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
    except UserError:  # refused before any result: nothing of ours left behind
        refused = True
        raise
    except BaseException:
        # a crash or Ctrl-C keeps its train.log for diagnosis, unless the directory holds no resolved_config.yaml
        # yet (a stage that writes it late): then nothing marks it as ours and it would block every rerun
        refused = not (Path(output_dir).expanduser() / RESOLVED_CONFIG).exists()
        raise
    finally:
        if handler is not None:
            close_log(handler)
        if claim.lock is not None:
            claim.lock.release()
        if refused and state.is_main_process and remove_if_only_ours(claim, own_files):
            logger.info("refused before any result: removed what this run wrote in %s", claim.out)


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
