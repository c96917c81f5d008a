"""The rejection-sampling stage as the recipe runs it: prompts from the data layer, models, the trainer
(``recipes/rejection_sampling.py``, ``python -m chimed_trl.stages.rejection_sampling``).

Prompts come from any source whose records hold one: ``ranked`` (the prompt; the best response is the
reference), ``conversation`` (every turn before the last assistant turn; that turn is the reference)
or ``dialogue_eval`` (the messages; the reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import get_peft_config

from chimed_trl.configs import ChimedModelConfig, DatasetsJSON, parse_sources
from chimed_trl.data.sources import iter_records, resolve
from chimed_trl.errors import UserError
from chimed_trl.modeling.load import load_tokenizer, model_init_kwargs
from chimed_trl.rundir import BOOKKEEPING_FILES
from chimed_trl.runfiles import move_secrets_to_env, resolve_config, write_json
from chimed_trl.stages._run import guarded_run, setup_logging
from chimed_trl.tiny import ensure_tiny
from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig, RejectionSamplingTrainer, check_prompts
from chimed_trl.trainers.rejection_sampling.config import RERUN_NEUTRAL_KEYS
from chimed_trl.trainers.rejection_sampling.trainer import RUN_FILE

logger = logging.getLogger(__name__)
DATA_STATS = "data_stats.json"


@dataclass
class RejectionSamplingScriptArguments:
    """Where the prompts come from and how the policy's tokenizer renders them."""

    datasets: list[DatasetsJSON] = field(
        default_factory=list,
        metadata={
            "help": "Prompt sources (ranked, conversation or dialogue_eval records), in YAML or as JSON on the "
            'command line: \'[{"card": "tiny_ranked", "path": "ranked.jsonl"}]\'.'
        },
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts (after dedup)."})
    chat_template: str | None = field(
        default=None, metadata={"help": "The policy's template: chatml, chimed or a Jinja string (with generation)."}
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={
            "help": "Build the embedded tiny policy when model_name_or_path is missing or empty (never over a user model)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start again in output_dir; the old run moves, whole, to output_dir/.previous/<time>/."},
    )

    def __post_init__(self):
        self.datasets = parse_sources(self.datasets)
        if self.max_prompts is not None and self.max_prompts < 1:  # 0 would otherwise mean "all prompts"
            raise UserError(f"max_prompts={self.max_prompts} must be >= 1 (leave it unset to use every prompt)")


def prompt_row(record: dict, fmt: str) -> dict:
    if fmt == "ranked":
        return {"prompt": record["prompt"], "reference": record["responses"][0]}
    if fmt == "dialogue_eval":
        return {"prompt": record["messages"], "reference": record["reference"], "id": record.get("id")}
    messages = record["messages"]
    if messages and messages[-1]["role"] == "assistant":
        return {"prompt": messages[:-1], "reference": messages[-1]["content"]}
    return {"prompt": messages}


def _has_mixture_share(source) -> bool:
    # `fraction`/`count` sample a training mixture; a prompt set takes max_prompts instead
    return source.fraction is not None or source.count is not None


def load_prompts(script_args: RejectionSamplingScriptArguments) -> tuple[list[dict], dict]:
    """Prompt rows of every source, checked (ends with a user turn, not empty) with the file and record named,
    and what ``data_stats.json`` records of them (read per source, used after ``max_prompts``)."""
    if not script_args.datasets:
        raise UserError("no prompts: add at least one entry under `datasets:`")
    rows, sources = [], []
    for i, source in enumerate(script_args.datasets):
        fmt = resolve(source)[1]
        if _has_mixture_share(source):  # a mixture share would be silently meaningless here
            raise UserError(
                f"datasets[{i}] ({source.label}): mixture shares are not used for prompts; use max_prompts"
            )
        if fmt not in ("ranked", "conversation", "dialogue_eval"):
            raise UserError(f"datasets[{i}] ({source.label}): {fmt} records hold no prompts")
        source_rows = [prompt_row(record, fmt) for record in iter_records(source)]
        check_prompts(source_rows, f"datasets[{i}] {source.path or source.label}: record")
        sources.append({"source": source.label, "format": fmt, "read": len(source_rows)})
        rows += source_rows
    if script_args.max_prompts is not None and script_args.max_prompts < len(rows):
        logger.info("using %d of %d prompts (max_prompts)", script_args.max_prompts, len(rows))
        rows = rows[: script_args.max_prompts]
    stats = {"sources": sources, "prompts_read": sum(x["read"] for x in sources), "prompts_used": len(rows)}
    return rows, stats | {"max_prompts": script_args.max_prompts}


def run_rejection_sampling(
    script_args: RejectionSamplingScriptArguments,
    training_args: RejectionSamplingConfig,
    model_args: ChimedModelConfig,
) -> dict:
    move_secrets_to_env(training_args)  # before anything can log, save or pickle the arguments
    setup_logging(training_args)
    set_seed(training_args.seed)
    state = PartialState()
    if script_args.build_tiny_model:
        with state.main_process_first():  # rank 0 builds; the others then find it built
            ensure_tiny(model_args.model_name_or_path)  # any tiny build; never a user model
    prompts, prompt_stats = load_prompts(script_args)  # data checks before the output dir is claimed
    sections = dict(run={"recipe": "rejection_sampling"}, script=script_args, training=training_args, model=model_args)

    def body(_resume) -> dict:
        if state.is_main_process:
            write_json(Path(training_args.output_dir).expanduser() / DATA_STATS, prompt_stats)
        used, read = prompt_stats["prompts_used"], prompt_stats["prompts_read"]
        logger.info("prompts: %d used of %d read (%s)", used, read, DATA_STATS)
        return _train(script_args, training_args, model_args, prompts, resolve_config(**sections))

    # the trainer writes resolved_config.yaml itself, once it has checked the samples it would resume
    own = BOOKKEEPING_FILES | {RUN_FILE}
    overwrite = script_args.overwrite_output_dir
    return guarded_run(
        training_args.output_dir, sections, overwrite, body, RERUN_NEUTRAL_KEYS, own, write_config=False
    )


def _train(script_args, training_args, model_args, prompts: list[dict], resolved: dict) -> dict:
    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args, script_args.chat_template, trust_remote_code=trust)
    init_kwargs = {k: v for k, v in model_init_kwargs(model_args, trust).items() if v is not None}
    trainer = RejectionSamplingTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        model_init_kwargs=init_kwargs,
        # compared with a previous run's in output_dir, and saved there only for a fresh or matching run
        resolved_config=resolved,
    )
    return trainer.train()


# what the YAML is parsed into
ARGUMENT_TYPES = (RejectionSamplingScriptArguments, RejectionSamplingConfig, ChimedModelConfig)


def main(script_args, training_args, model_args) -> dict:
    return run_rejection_sampling(script_args, training_args, model_args)


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
