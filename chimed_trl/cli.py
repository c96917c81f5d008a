"""The recipes' entry point: parse a flat YAML (+ CLI overrides) with ``TrlParser``, run, exit cleanly.

A :class:`~chimed_trl.errors.UserError` (bad config key, bad data row, missing model directory)
ends the process with one line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from chimed_trl.errors import UserError


def run_recipe(main: Callable, dataclass_types: Sequence[type], argv: list[str] | None = None):
    from trl import TrlParser

    try:
        parsed = TrlParser(tuple(dataclass_types)).parse_args_and_config(argv)
        return main(*parsed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
