"""Load one source (a local file or a hub dataset) through its formatter into canonical records.

A source names a data card (which brings the formatter, the format and the encoding) or a
formatter directly, and a local ``path`` or, failing that, the card's hub id (streamed row by row,
so the ~2M-row CMD sets never need to fit in memory before conversion).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chimed_trl.data.cards import load_card
from chimed_trl.data.formatters import Context, FieldError, Skip, get_formatter
from chimed_trl.data.records import DataError, is_empty, validate

logger = logging.getLogger(__name__)


@dataclass
class SourceConfig:
    """One entry of a recipe's ``datasets:`` list."""

    card: str | None = None
    formatter: str | None = None
    path: str | None = None
    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    weight: float = 1.0  # <= 1: fraction of the kept records; > 1: a record count (upsampled if needed)
    encoding: str | None = None
    strict: bool = False  # empty records: skipped and counted (False) or an error (True)
    name: str | None = None

    def __post_init__(self):
        if not self.card and not self.formatter:
            raise ValueError(f"dataset source {self.path or self.hub_id!r}: give a `card` or a `formatter`")
        if self.weight is None or self.weight <= 0:
            raise ValueError(f"dataset source {self.label}: weight must be > 0, got {self.weight}")

    @property
    def label(self) -> str:
        return self.name or self.card or Path(self.path or self.hub_id or self.formatter or "?").stem


def source_from_config(entry, where: str) -> SourceConfig:
    """A ``datasets:`` entry (dict from YAML) -> SourceConfig; unknown keys named with the entry's place."""
    if isinstance(entry, SourceConfig):
        return entry
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping like {{card: ..., path: ...}}, got {entry!r}")
    known = set(SourceConfig.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; a source takes {', '.join(sorted(known))}")
    try:
        return SourceConfig(**entry)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass
class SourceStats:
    name: str
    read: int = 0
    kept: int = 0
    skipped: dict = field(default_factory=Counter)
    duplicates: int = 0
    selected: int = 0

    def as_row(self) -> dict:
        return {**asdict(self), "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values())}


def resolve(source: SourceConfig) -> tuple:
    """(formatter, format, encoding, path, hub_id, hub_config) for a source."""
    card = load_card(source.card) if source.card else None
    formatter = get_formatter(source.formatter or card.formatter)
    encoding = source.encoding or (card.encoding if card else None)
    hub_id = source.hub_id or (card.source if card and not source.path else None)
    config = source.config or (card.config if card else None)
    return formatter, formatter.format, encoding, source.path, hub_id, config


def _hub_rows(hub_id: str, config: str | None, split: str) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        stream = load_dataset(hub_id, config, split=split, streaming=True)
    except Exception as e:  # offline, unknown id, gated: say which source and how to fix it
        raise ValueError(
            f"could not open hub dataset {hub_id!r} (config {config!r}, split {split!r}): {type(e).__name__}: {e}. "
            "Offline or gated? Download it and set `path:` on the source."
        ) from None
    for i, row in enumerate(stream):
        yield f"{hub_id}[{config or 'default'}/{split}] row {i}", row


def iter_records(source: SourceConfig, stats: SourceStats | None = None) -> Iterator[dict]:
    """Canonical, validated records of a source; empty ones skipped and counted (or an error if strict)."""
    formatter, fmt, encoding, path, hub_id, config = resolve(source)
    stats = stats if stats is not None else SourceStats(source.label)
    if path:
        rows, ctx = formatter.reader(Path(path), encoding), Context(path=Path(path))
    elif hub_id:
        rows, ctx = _hub_rows(hub_id, config, source.split), Context()
    else:
        raise ValueError(f"dataset source {source.label}: give a `path` (or a card whose `source` is a hub id)")
    for where, row in rows:
        stats.read += 1
        try:
            out = formatter.convert(row, ctx)
        except FieldError as e:
            raise DataError(where, e.field, str(e)) from None
        for record in out if isinstance(out, list) else [out]:
            reason = record.reason if isinstance(record, Skip) else None
            if reason is None:
                validate(record, fmt, where)
                reason = is_empty(record, fmt)
                if reason and source.strict:
                    raise DataError(where, None, f"{reason} (strict: true)")
            if reason:
                stats.skipped[reason] += 1
                continue
            stats.kept += 1
            yield record
    if stats.skipped:
        logger.warning("%s: skipped %s", source.label, dict(stats.skipped))


def load_records(source: SourceConfig) -> tuple[list[dict], SourceStats]:
    stats = SourceStats(source.label)
    return list(iter_records(source, stats)), stats
