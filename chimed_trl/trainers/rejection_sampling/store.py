"""The round's two append-only stores, their repair after a kill, and what a resumed round still has to do.

- ``round_<r>/generated.jsonl``: one line per (prompt id, sample index) as each answer comes back from a
  server (``text``, ``truncated``), in completion order. A failed or killed round keeps every answer that
  came back; the rerun asks only for the missing ones (each sample's seed depends only on its prompt and
  index, so they are the answers an uninterrupted run would have got).
- ``round_<r>/samples.jsonl``: the scored lines, all lines of a prompt written together (reward, kept, ...).
  A prompt found here is done.

Both are appended by the main process only: whole lines, flushed and fsynced per write. A torn last line
(a kill inside ``write``) is dropped on repair, and so is a prompt with fewer scored lines than a whole one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from chimed_trl.runs import write_atomic

logger = logging.getLogger(__name__)


def parse_lines(text: str) -> list[dict]:
    # split on "\n" only: str.splitlines() also splits on U+2028, U+0085, ..., which sampled text may hold
    # and json.dumps(ensure_ascii=False) leaves unescaped
    return [json.loads(x) for x in text.split("\n") if x.strip()]


def _dump(lines: list[dict]) -> str:
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)


class _JsonlStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return parse_lines(self.path.read_text(encoding="utf-8"))

    def append(self, lines: list[dict]) -> None:
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(_dump(lines))
            f.flush()
            os.fsync(f.fileno())

    def _whole_lines(self) -> tuple[list[dict], bool]:
        """The complete lines, and whether a torn last line was cut off."""
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        return parse_lines(complete.decode("utf-8")), len(complete) != len(raw)


class SampleStore(_JsonlStore):
    """``round_<r>/samples.jsonl``: the scored lines, ``lines_per_prompt`` per prompt."""

    def __init__(self, path: Path, lines_per_prompt: int):
        super().__init__(path)
        self.lines_per_prompt = lines_per_prompt

    def repair(self) -> None:
        """Drop a torn last line and any prompt with fewer lines than a complete one (a killed write)."""
        if not self.path.exists():
            return
        lines, torn = self._whole_lines()
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["prompt_id"]] = counts.get(line["prompt_id"], 0) + 1
        whole = [x for x in lines if counts[x["prompt_id"]] == self.lines_per_prompt]
        if len(whole) != len(lines) or torn:
            logger.warning("%s: dropped %d partial lines of an interrupted run", self.path, len(lines) - len(whole))
            write_atomic(self.path, _dump(whole))


class GenerationStore(_JsonlStore):
    """``round_<r>/generated.jsonl``: raw answers keyed by (prompt id, sample index), in any order."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.appended = 0  # answers this process stored (what it generated itself, for samples/s)

    def append(self, lines: list[dict]) -> None:
        super().append(lines)
        self.appended += len(lines)

    def repair(self) -> None:
        if self.path.exists() and self._whole_lines()[1]:
            logger.warning("%s: dropped a torn last line of an interrupted run", self.path)
            write_atomic(self.path, _dump(self._whole_lines()[0]))

    def by_key(self) -> dict[tuple[str, int], dict]:
        """The first answer stored for each (prompt id, sample index)."""
        found: dict[tuple[str, int], dict] = {}
        for line in self.read():
            found.setdefault((line["prompt_id"], line["sample"]), line)
        return found
