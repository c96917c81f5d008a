"""Load one source (a local file or a hub dataset) through its formatter into canonical records.

A source names a data card (which brings the formatter, the format and the encoding) or a
formatter directly, and a local ``path`` or, failing that, the card's hub id (streamed row by row,
so the ~2M-row CMD sets never need to fit in memory before conversion).

A ``path`` may be a file or a directory: a directory is read file by file in sorted order (e.g.
CMMLU's ``test/`` of one CSV per subject; hidden files skipped). Plain ``.txt`` files hold one document
per line by default (``txt_documents: line``), or documents separated by blank lines
(``txt_documents: paragraph``), each read as ``{"text": ...}``.

How much of a source enters the training mixture: ``fraction:`` (a share in (0, 1] of its records,
sampled without replacement) or ``count:`` (a number of records, upsampled by repetition when the
source has fewer); not both. Either applies to the source's training records only, after the
held-out split (see :mod:`chimed_trl.data.mixtures`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chimed_trl.bundled import PACKAGE, bundled_path
from chimed_trl.data import readers
from chimed_trl.data.cards import load_card
from chimed_trl.data.formatters import Context, FieldError, Skip, get_formatter
from chimed_trl.data.records import DataError, is_empty, validate
from chimed_trl.errors import ConfigError, UserError

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
    fraction: float | None = None  # share in (0, 1] of the source's training records
    count: int | None = None  # number of training records from the source (upsampled if it has fewer)
    encoding: str | None = None
    strict: bool = False  # empty records: skipped and counted (False) or an error (True)
    name: str | None = None
    txt_documents: str = "line"  # .txt files: one document per line, or "paragraph" (blank-line separated)

    def __post_init__(self):
        if self.path is not None:  # a shipped sample named from the checkout's layout resolves from any directory
            self.path = str(bundled_path(self.path))
        if not self.card and not self.formatter:
            raise ConfigError(f"dataset source {self.path or self.hub_id!r}: give a `card` or a `formatter`")
        if self.fraction is not None and self.count is not None:
            raise ConfigError(f"dataset source {self.label}: give `fraction` or `count`, not both")
        if self.fraction is not None and (isinstance(self.fraction, bool) or not 0 < self.fraction <= 1):
            raise ConfigError(
                f"dataset source {self.label}: fraction must be in (0, 1], got {self.fraction!r} "
                "(to upsample, give `count:` records)"
            )
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise ConfigError(f"dataset source {self.label}: count must be a whole number >= 1, got {self.count!r}")
        if self.txt_documents not in readers.TXT_DOCUMENTS:
            raise ConfigError(
                f"dataset source {self.label}: txt_documents must be one of {readers.TXT_DOCUMENTS}, "
                f"got {self.txt_documents!r}"
            )

    @property
    def label(self) -> str:
        return self.name or self.card or Path(self.path or self.hub_id or self.formatter or "?").stem


def source_from_config(entry, where: str) -> SourceConfig:
    """A ``datasets:`` entry (dict from YAML) -> SourceConfig; unknown keys named with the entry's place."""
    if isinstance(entry, SourceConfig):
        return entry
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping like {{card: ..., path: ...}}, got {entry!r}")
    if "weight" in entry:
        raise ConfigError(
            f"{where}: `weight` is ambiguous (it meant a share when <= 1 and a record count when > 1) and no longer "
            "accepted: write `fraction: 0.3` for a share of the source or `count: 200000` for a number of records"
        )
    known = set(SourceConfig.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; a source takes {', '.join(sorted(known))}")
    try:
        return SourceConfig(**entry)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_sources(entries, name: str = "datasets") -> list[SourceConfig]:
    """A recipe's source list (YAML mappings, or JSON lists from the command line, one list per flag), flattened
    -> SourceConfigs; a mistake names its place, ``name[i]``."""
    flat = []
    for entry in entries:
        flat += entry if isinstance(entry, list) else [entry]
    return [source_from_config(s, f"{name}[{i}]") for i, s in enumerate(flat)]


@dataclass
class SourceStats:
    name: str
    read: int = 0
    kept: int = 0
    skipped: dict = field(default_factory=Counter)
    duplicates: int = 0
    held_out: int = 0  # unique records of this source in the held-out split
    selected: int = 0  # records of this source in train, after fraction/count

    def as_row(self) -> dict:
        return {**asdict(self), "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values())}


def resolve(source: SourceConfig) -> tuple:
    """(formatter, format, encoding, path, hub_id, hub_config) for a source."""
    card = load_card(source.card) if source.card else None
    formatter = get_formatter(source.formatter or card.formatter)
    encoding = source.encoding or (card.encoding if card else None)
    path = source.path
    if path is None and card is not None and _ships_with_package(card.source):
        path = str(bundled_path(card.source))  # a card for a bundled sample needs no `path`
    hub_id = source.hub_id or (card.source if card and not path else None)
    config = source.config or (card.config if card else None)
    return formatter, formatter.format, encoding, path, hub_id, config


def _ships_with_package(card_source: str) -> bool:
    return Path(card_source).parts[:1] == (PACKAGE.name,)


def _hub_rows(hub_id: str, config: str | None, split: str) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        stream = load_dataset(hub_id, config, split=split, streaming=True)
    except Exception as e:  # offline, unknown id, gated: say which source and how to fix it
        raise UserError(
            f"could not open hub dataset {hub_id!r} (config {config!r}, split {split!r}): {type(e).__name__}: {e}. "
            "Offline or gated? Download it and set `path:` on the source."
        ) from None
    for i, row in enumerate(stream):
        yield f"{hub_id}[{config or 'default'}/{split}] row {i}", row


def _file_rows(formatter, path: Path, encoding: str | None, txt_documents: str):
    """``(where, row, context)`` of a file, or of every file of a directory in sorted order."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    files = [path] if path.is_file() else readers.files_in(path)
    if not files:
        raise UserError(f"{path}: the directory holds no data files")
    for file in files:
        if formatter.reader is readers.read_rows:
            rows = readers.read_rows(file, encoding, txt_documents=txt_documents)
        else:
            rows = formatter.reader(file, encoding)
        ctx = Context(path=file)
        for where, row in rows:
            yield where, row, ctx


def iter_records(source: SourceConfig, stats: SourceStats | None = None) -> Iterator[dict]:
    """Canonical, validated records of a source; empty ones skipped and counted (or an error if strict)."""
    formatter, fmt, encoding, path, hub_id, config = resolve(source)
    stats = stats if stats is not None else SourceStats(source.label)
    if path:
        rows = _file_rows(formatter, Path(path), encoding, source.txt_documents)
    elif hub_id:
        rows = ((where, row, Context()) for where, row in _hub_rows(hub_id, config, source.split))
    else:
        raise ConfigError(f"dataset source {source.label}: give a `path` (or a card whose `source` is a hub id)")
    for where, row, ctx in rows:
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
