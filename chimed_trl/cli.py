"""The recipes' entry point: parse a flat YAML (+ CLI overrides) with ``TrlParser``, run, exit cleanly.

A :class:`~chimed_trl.errors.UserError` (bad config key, bad data row, missing model directory)
ends the process with one line ``error: ...`` on stderr and exit code 2, never a traceback. Parsing
mistakes are translated too: a value of the wrong type (argparse would print the 150-line usage) or a
``ValueError`` from a config dataclass's checks becomes one line naming the key and the YAML file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from chimed_trl.errors import ConfigError, UserError


def _config_path(argv: list[str]) -> str | None:
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


def _parser(dataclass_types: Sequence[type]):
    from trl import TrlParser

    class RecipeParser(TrlParser):
        def error(self, message):  # argparse would print the whole usage text, then exit
            raise ConfigError(message)

    return RecipeParser(tuple(dataclass_types))


def parse_recipe_args(dataclass_types: Sequence[type], argv: list[str] | None = None) -> tuple:
    """``TrlParser(...).parse_args_and_config(argv)`` with every config mistake raised as a ConfigError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = _config_path(argv)
    try:
        return _parser(dataclass_types).parse_args_and_config(argv)
    except FileNotFoundError as e:
        if e.filename == config:
            raise ConfigError(f"--config {config}: no such file") from None
        raise
    except (ValueError, TypeError) as e:  # a config dataclass's own checks (ours, TRL's, transformers')
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(message) from None


def run_recipe(main: Callable, dataclass_types: Sequence[type], argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
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
