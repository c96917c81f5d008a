"""The one append-only, resumable JSONL store: what a stage writes line by line so that a killed run loses nothing.

One writer (the main process) appends whole lines, flushed and fsynced per write, so a kill leaves at most a
torn last line; :meth:`JsonlStore.repair` cuts it off and returns the whole lines, and a rerun carries on from
them. Augmentation's ``ranked.jsonl``/``dropped.jsonl`` and rejection sampling's ``generated.jsonl``/
``samples.jsonl`` are such stores (:mod:`chimed_trl.stages.augment`,
:mod:`chimed_trl.trainers.rejection_sampling.store`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from chimed_trl.errors import UserError
from chimed_trl.runfiles import write_atomic

logger = logging.getLogger(__name__)


def dump_lines(lines: list[dict]) -> str:
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)


def parse_lines(text: str, where: str = "JSONL") -> list[dict]:
    """The JSON objects of ``text``, one per line; a malformed line is one error naming ``where`` and the line."""
    # split on "\n" only: str.splitlines() also splits on U+2028, U+0085, ..., which generated text may hold
    # and json.dumps(ensure_ascii=False) leaves unescaped
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{where}:{number}: malformed JSON ({e.msg}); was the file edited?") from None
    return rows


class JsonlStore:
    """``JsonlStore(path)``: :meth:`append` whole lines, :meth:`read` them back, :meth:`repair` after a kill."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return parse_lines(self.path.read_text(encoding="utf-8"), str(self.path))

    def append(self, lines: list[dict]) -> None:
        """One write of whole lines, flushed and fsynced: a kill leaves at most a torn last line."""
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(dump_lines(lines))
            f.flush()
            os.fsync(f.fileno())

    def whole_lines(self) -> tuple[list[dict], bool]:
        """The complete lines, and whether a torn last line follows them."""
        if not self.path.exists():
            return [], False
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        return parse_lines(complete.decode("utf-8"), str(self.path)), len(complete) != len(raw)

    def repair(self) -> list[dict]:
        """Cut off a torn last line (a kill inside a write), atomically; returns the whole lines."""
        lines, torn = self.whole_lines()
        if torn:
            logger.warning("%s: removing a partial last line left by an interrupted run", self.path)
            self.rewrite(lines)
        return lines

    def rewrite(self, lines: list[dict]) -> None:
        """Replace the store with ``lines`` in one atomic step (temp file + rename)."""
        write_atomic(self.path, dump_lines(lines))
