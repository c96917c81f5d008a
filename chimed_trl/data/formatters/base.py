"""The formatter registry and what every formatter uses: :class:`Formatter`, :func:`register`, :func:`field`,
:class:`Skip`, :class:`FieldError`, :class:`Context`, and the canonical pass-through formatters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chimed_trl.data import readers


class FieldError(ValueError):
    """A problem with one field of a raw row; the caller knows the file and line."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass
class Context:
    path: Path | None = None  # the source file (CMMLU/C-Eval take the subject from its name)


@dataclass(frozen=True)
class Formatter:
    name: str
    format: str
    convert: Callable[[dict, Context], Any]
    reader: Callable[[Path, str | None], Iterator[tuple[str, dict]]] = readers.read_rows
    description: str = ""


FORMATTERS: dict[str, Formatter] = {}


def register(name: str, fmt: str, reader=None):
    def wrap(fn):
        FORMATTERS[name] = Formatter(name, fmt, fn, reader or readers.read_rows, (fn.__doc__ or "").strip())
        return fn

    return wrap


def get_formatter(name: str) -> Formatter:
    if name not in FORMATTERS:
        raise ValueError(f"Unknown formatter {name!r}: expected one of {', '.join(sorted(FORMATTERS))}")
    return FORMATTERS[name]


def field(row: dict, key: str, kind: type | tuple = str, optional: bool = False):
    if key not in row or row[key] is None:
        if optional:
            return None
        raise FieldError(key, "missing")
    value = row[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FieldError(key, f"expected {name}, got {type(value).__name__}")
    return value


def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _join(*parts: str | None) -> str:
    return "\n".join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------- canonical pass-through
for _fmt in ("text", "conversation", "ranked", "choice", "ner", "dialogue_eval", "scale_item"):
    FORMATTERS[_fmt] = Formatter(_fmt, _fmt, lambda row, ctx: row, readers.read_rows, f"canonical {_fmt} records")
