"""Errors that stand for a user's mistake (a config key, a data row, a path), not a bug in the package.

Raise :class:`UserError` (or a subclass such as :class:`chimed_trl.data.records.DataError`) with a
message that names the file, row/line and field, or the config key. The recipes' entry point
(:func:`chimed_trl.cli.run_recipe`) prints such an error as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; its message is the one line they see."""


class ConfigError(UserError):
    """A bad value of a recipe's config key; the recipe entry point adds the YAML file's name."""


def json_problem(error) -> str:
    """A ``json.JSONDecodeError`` as ``<what>: column N`` (its ``msg`` may end in "at": "starting at")."""
    return f"{error.msg}: column {error.colno}"
