"""The recipes' entry point: parse a flat YAML (+ CLI overrides) with ``TrlParser``, run, exit cleanly.

A :class:`~chimed_trl.errors.UserError` (bad config key, bad data row, missing model directory)
ends the process with one line ``error: ...`` on stderr and exit code 2, never a traceback. Parsing
mistakes are translated too: a value of the wrong type (argparse would print the 150-line usage) or a
``ValueError`` from a config dataclass's checks becomes one line naming the key and the YAML file.

Before anything is parsed, the YAML is read here: invalid YAML is one line with its file, line and column,
and an unknown key (in the YAML or on the command line) is named with the closest known keys. After
parsing, :data:`SETTING_RULES` checks every numeric and enum setting a user can get wrong, before any data
or model loads (and before the output directory is claimed).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from collections.abc import Callable, Sequence
from numbers import Number
from pathlib import Path

from chimed_trl.errors import ConfigError, UserError
from chimed_trl.stages import STAGES  # the stage index only (lazy: no stage is imported)


def _config_path(argv: list[str]) -> str | None:
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


def _parser(dataclass_types: Sequence[type]):
    from trl import TrlParser

    class RecipeParser(TrlParser):
        def error(self, message):  # argparse would print the whole usage text, then exit
            raise ConfigError(message)

    return RecipeParser(tuple(dataclass_types))


def read_yaml_config(path: str) -> dict:
    """The recipe YAML as a mapping; invalid YAML is one line naming the file, line and column."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot be read ({e})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        hint = " (YAML indents with spaces, never tabs)" if "\\t" in problem else ""
        raise UserError(f"{where}: invalid YAML: {problem}{hint}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a mapping of key: value at the top level, got {type(config).__name__}")
    return config


def known_keys(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for t in dataclass_types for f in dataclasses.fields(t)} | {"env", "config"}


def known_flags(dataclass_types: Sequence[type]) -> set[str]:
    """The command line also takes what HfArgumentParser adds: ``--help``, ``--no_<bool>``, ``--dashed-names``."""
    keys = known_keys(dataclass_types)
    return keys | {"help"} | {f"no_{k}" for k in keys} | {k.replace("_", "-") for k in keys}


def unknown_key_error(key: str, known: set[str], where: str) -> UserError:
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"{where}: unknown key {key!r}{hint}")


def check_keys(dataclass_types: Sequence[type], config: dict, config_path: str | None, argv: list[str]) -> None:
    """Every YAML key and every ``--flag`` must be a field of the recipe's dataclasses."""
    known = known_keys(dataclass_types)
    for key in config:
        if key not in known:
            raise unknown_key_error(str(key), known, str(config_path))
    flags = known_flags(dataclass_types)
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            key = arg[2:].split("=", 1)[0]
            if key not in flags:
                raise unknown_key_error(key, known, "command line")


def resolve_config_arg(argv: list[str]) -> list[str]:
    """``--config recipes/tiny/sft.yaml`` names the shipped file when the working directory has none; ``--config=X``
    is read as ``--config X`` (TrlParser looks for the separate form only)."""
    from chimed_trl.bundled import bundled_path

    argv = [part for a in argv for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
    config = _config_path(argv)
    if config is None:
        return argv
    i = argv.index("--config") + 1
    return [*argv[:i], str(bundled_path(config)), *argv[i + 1 :]]


def parse_recipe_args(dataclass_types: Sequence[type], argv: list[str] | None = None) -> tuple:
    """``TrlParser(...).parse_args_and_config(argv)`` with every config mistake raised as a ConfigError."""
    argv = resolve_config_arg(list(sys.argv[1:] if argv is None else argv))
    config = _config_path(argv)
    # the flags are checked with or without a YAML: without one, a typo'd flag would otherwise surface as
    # whatever a dataclass's __post_init__ raises first (HfArgumentParser builds them before it rejects leftovers)
    rest = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
    check_keys(dataclass_types, read_yaml_config(config) if config is not None else {}, config, rest)
    try:
        parsed = _parser(dataclass_types).parse_args_and_config(argv)
    except FileNotFoundError as e:
        if e.filename == config:
            raise ConfigError(f"--config {config}: no such file") from None
        raise
    except (ValueError, TypeError) as e:  # a config dataclass's own checks (ours, TRL's, transformers')
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(message) from None
    check_settings(parsed)
    return parsed


def _positive(v) -> bool:
    return v > 0 and math.isfinite(v)


# key -> (valid?, what a valid value is); applied to every parsed dataclass that has the key, so one table
# covers the training, reward, rejection-sampling and evaluation recipes. None means "unset" and passes.
SETTING_RULES: dict[str, tuple[Callable, str]] = {
    "learning_rate": (_positive, "a number > 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "an integer >= 1"),
    "num_train_epochs": (lambda v: v >= 0 and math.isfinite(v), "a number >= 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (use num_train_epochs) or an integer >= 1"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "max_grad_norm": (lambda v: v >= 0, "a number >= 0"),
    "warmup_ratio": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "adam_beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "adam_epsilon": (_positive, "a number > 0"),
    "logging_steps": (_positive, "a number > 0"),
    "save_steps": (_positive, "a number > 0"),
    "eval_steps": (_positive, "a number > 0"),
    "max_length": (lambda v: v >= 1, "a number of tokens >= 1 (or null for no limit)"),
    "max_new_tokens": (lambda v: v >= 1, "an integer >= 1"),
    "dataloader_num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "lora_r": (lambda v: v >= 1, "an integer >= 1"),
    "lora_alpha": (_positive, "a number > 0"),
    "lora_dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "num_samples": (lambda v: v >= 1, "an integer >= 1"),
    "num_rounds": (lambda v: v >= 1, "an integer >= 1"),
    "max_prompts": (lambda v: v >= 1, "an integer >= 1 (or null for all)"),
    "generation_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "reward_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "temperature": (lambda v: v >= 0 and math.isfinite(v), "a number >= 0"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "limit": (lambda v: v >= 0, "an integer >= 0 (0 means all)"),
    "num_fewshot": (lambda v: v >= 0, "an integer >= 0"),
}


def check_settings(parsed: Sequence) -> None:
    """One line naming the first setting out of its range (:data:`SETTING_RULES`), before any data loads."""
    for args in parsed:
        if not dataclasses.is_dataclass(args):
            continue
        for key, (valid, what) in SETTING_RULES.items():
            value = getattr(args, key, None)
            if isinstance(value, Number) and not isinstance(value, bool) and not valid(value):
                raise ConfigError(f"{key}: must be {what}, got {value!r}")
        top_k, n = getattr(args, "top_k", None), getattr(args, "num_samples", None)
        if isinstance(top_k, int) and isinstance(n, int) and not 1 <= top_k <= n:
            raise ConfigError(f"top_k: must be between 1 and num_samples ({n}), got {top_k}")


def run_recipe(main: Callable, dataclass_types: Sequence[type], argv: list[str] | None = None):
    argv = resolve_config_arg(list(sys.argv[1:] if argv is None else argv))
    config = _config_path(argv)
    try:
        result = main(*parse_recipe_args(dataclass_types, argv))
        _leave_process_group()
        return result
    except ConfigError as e:
        where = f" (in {config} or its command-line overrides)" if config else ""
        print(f"error: {e}{where}", file=sys.stderr)
        raise SystemExit(2) from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _leave_process_group() -> None:
    """All ranks meet, then the process group closes: a rank exiting mid-exchange would abort another (gloo)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# The ``chimed-trl`` console command (TRL's ``trl sft`` convention): one subcommand per stage, named like
# its recipe and taking the recipe's flags, plus the pipeline, the demo, adapter merging and the tiny model.
ALIASES = {"augment": "augment_rewards", "rs": "rejection_sampling"}
# recipe name -> stage module: the pipeline's table (chimed_trl.stages.STAGES), without its aliases
STAGE_COMMANDS = {name: f"chimed_trl.stages.{module}" for name, module in STAGES.items() if name not in ALIASES}
TOOL_COMMANDS = {  # command -> the module whose main(argv) it is
    "pipeline": "chimed_trl.pipeline.runner",
    "demo": "chimed_trl.demo",
    "merge": "chimed_trl.modeling.merge",
    "tiny": "chimed_trl.tiny",
}

USAGE = f"""usage: chimed-trl <command> [flags]

stages (the flags of recipes/<command>.py; multi-GPU: accelerate launch -m chimed_trl.stages.<stage> ...):
  {", ".join(STAGE_COMMANDS)}   (aliases: {", ".join(f"{a}={c}" for a, c in ALIASES.items())})
tools:
  pipeline --config PIPELINE.yaml [--output_dir DIR] [--from STAGE] [--dry-run]
  demo [--output_dir DIR] [pipeline flags]   the whole regime on the tiny model (recipes/tiny/pipeline.yaml, shipped)
  merge --base B --adapter A --output O      merge a LoRA adapter into its base
  tiny DIR [--seed N]                        build the embedded tiny model
Each command's own --help lists its flags."""


def main(argv: list[str] | None = None) -> None:
    """``chimed-trl <command> ...``: the stage's recipe entry (``run_recipe``) or the tool's ``main(argv)``.

    The module is imported, not run as ``__main__``: its config dataclasses must live in their own module for the
    parser to resolve their annotations.
    """
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in STAGE_COMMANDS and command not in TOOL_COMMANDS:
        known = [*STAGE_COMMANDS, *TOOL_COMMANDS, *ALIASES]
        close = difflib.get_close_matches(command, known, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; commands: {', '.join(known)}"
        print(f"error: chimed-trl: unknown command {command!r}{hint}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [f"chimed-trl {argv[0]}", *rest]  # usage lines name the command as typed
    if command in STAGE_COMMANDS:
        stage = importlib.import_module(STAGE_COMMANDS[command])
        run_recipe(stage.main, stage.ARGUMENT_TYPES, rest)
        return
    raise SystemExit(importlib.import_module(TOOL_COMMANDS[command]).main(rest) or 0)
