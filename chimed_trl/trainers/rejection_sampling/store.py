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

import logging
from pathlib import Path

from chimed_trl.jsonl_store import JsonlStore, parse_lines

logger = logging.getLogger(__name__)
__all__ = ["GenerationStore", "SampleStore", "parse_lines"]


class SampleStore(JsonlStore):
    """``round_<r>/samples.jsonl``: the scored lines, ``lines_per_prompt`` per prompt."""

    def __init__(self, path: Path, lines_per_prompt: int):
        super().__init__(path)
        self.lines_per_prompt = lines_per_prompt

    def repair(self) -> list[dict]:
        """Drop a torn last line and any prompt with fewer lines than a complete one (a killed write)."""
        lines, torn = self.whole_lines()
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["prompt_id"]] = counts.get(line["prompt_id"], 0) + 1
        whole = [x for x in lines if counts[x["prompt_id"]] == self.lines_per_prompt]
        if len(whole) != len(lines) or torn:
            logger.warning("%s: dropped %d partial lines of an interrupted run", self.path, len(lines) - len(whole))
            self.rewrite(whole)
        return whole


class GenerationStore(JsonlStore):
    """``round_<r>/generated.jsonl``: raw answers keyed by (prompt id, sample index), in any order."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.appended = 0  # answers this process stored (what it generated itself, for samples/s)

    def append(self, lines: list[dict]) -> None:
        super().append(lines)
        self.appended += len(lines)

    def by_key(self) -> dict[tuple[str, int], dict]:
        """The first answer stored for each (prompt id, sample index)."""
        found: dict[tuple[str, int], dict] = {}
        for line in self.read():
            found.setdefault((line["prompt_id"], line["sample"]), line)
        return found
