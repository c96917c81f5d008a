"""Mixtures: several sources, de-duplicated across sources, split into train/held-out, then weighted.

Order matters, and is: (1) read and de-duplicate: exact on normalised text (NFKC, lower-case,
whitespace removed) of the whole record, first occurrence wins (sources in the order given);
(2) split: ``test_size`` unique records, drawn uniformly from all sources, are held out; (3) weight:
each source's remaining records are sub-sampled (``fraction:``) or up/down-sampled (``count:``) into
train. Held-out records are never upsampled into train, so train and test never share a record.

``test_size``: a whole number >= 1 is a record count; a float in (0, 1) is a share of the unique
records; 0 holds nothing out. ``1.0`` (and any float >= 1) is refused: write ``1`` for one record.

Built with ``datasets``: the unique records become one Arrow table (one schema inferred from every record), the
split is ``train_test_split``, weighting is ``shuffle``/``select`` and ``concatenate_datasets`` of whole copies,
all drawn from one seeded generator. ``interleave_datasets`` is not used: it samples sources by probability,
so a source's ``count`` (exactly N records, each copied the same number of times) would only hold on average.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from pathlib import Path

import numpy as np

from chimed_trl.data.records import record_text
from chimed_trl.data.sources import SourceConfig, SourceStats, iter_records, resolve
from chimed_trl.errors import ConfigError, UserError
from chimed_trl.runfiles import write_json

logger = logging.getLogger(__name__)
_SPACE = re.compile(r"\s+")
SOURCE_COLUMN = "__mixture_source__"  # which source a unique record came from (dropped from the result)


def normalise(text: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", text)).lower()


def record_key(record: dict) -> bytes:
    return hashlib.blake2b(normalise(record_text(record)).encode("utf-8"), digest_size=16).digest()


def _select(records, source: SourceConfig, rng: np.random.Generator):
    """A source's training records (a Dataset) after ``fraction`` (sample without replacement) or ``count``
    (whole copies, then a sample of the rest: every record appears ``count // n`` or ``count // n + 1`` times)."""
    from datasets import concatenate_datasets

    n = len(records)
    if source.fraction is not None:
        keep = max(1, round(source.fraction * n)) if n else 0
        return records.shuffle(generator=rng).select(range(keep)) if keep < n else records
    if source.count is None or source.count == n:
        return records
    if source.count < n:
        return records.shuffle(generator=rng).select(range(source.count))
    copies, rest = divmod(source.count, n)
    return concatenate_datasets([records] * copies + [records.shuffle(generator=rng).select(range(rest))])


def held_out_count(test_size: float | int, n_records: int) -> int:
    """Records to hold out of ``n_records`` (see the module docstring for what ``test_size`` means)."""
    if isinstance(test_size, bool) or test_size < 0:
        raise ConfigError(f"test_size must be a count >= 1, a fraction in (0, 1) or 0, got {test_size!r}")
    if isinstance(test_size, float) and test_size >= 1:
        if test_size.is_integer() and test_size > 1:
            return int(test_size)  # 2000.0 from a float-typed source: unambiguous
        raise ConfigError(
            f"test_size {test_size!r} is ambiguous: write 1 to hold out one record, or a fraction below 1 such as 0.1"
        )
    return int(round(test_size * n_records)) if isinstance(test_size, float) else int(test_size)


def build_mixture(
    sources: list[SourceConfig],
    seed: int = 0,
    test_size: float | int = 0.0,
    dedup: bool = True,
    output_dir: str | Path | None = None,
):
    """Returns ``(DatasetDict with "train" [and "test"], stats rows)``; writes ``data_stats.json``."""
    from datasets import Dataset, DatasetDict, concatenate_datasets

    if not sources:
        raise ConfigError("the mixture has no sources: add at least one entry under `datasets:`")
    formats = {resolve(s)[1] for s in sources}
    if len(formats) > 1:
        raise ConfigError(f"a mixture mixes record formats {sorted(formats)}: use one format per mixture")
    per_source, all_stats = _read_unique(sources, dedup)
    # split first: the held-out records are drawn from the unique records, before any upsampling
    pool = Dataset.from_list([{**r, SOURCE_COLUMN: i} for i, kept in enumerate(per_source) for r in kept])
    n_test = held_out_count(test_size, len(pool)) if test_size else 0
    if test_size and not 0 < n_test < len(pool):
        raise ConfigError(f"test_size={test_size} leaves no train or no test records out of {len(pool)}")
    rng = np.random.default_rng(seed)
    splits = pool.train_test_split(test_size=n_test, generator=rng) if n_test else {"train": pool}
    held_sources = splits["test"][SOURCE_COLUMN] if n_test else []
    train_sources = np.asarray(splits["train"][SOURCE_COLUMN])
    parts = []
    for i, (source, stats) in enumerate(zip(sources, all_stats)):
        records = splits["train"].select(np.flatnonzero(train_sources == i))
        selected = _select(records, source, rng) if len(records) else records
        stats.held_out = held_sources.count(i)
        stats.selected = len(selected)
        parts.append(selected)
    result = {"train": concatenate_datasets(parts).shuffle(generator=rng)}
    if n_test:
        result["test"] = splits["test"]
    result = DatasetDict({k: v.remove_columns(SOURCE_COLUMN).flatten_indices() for k, v in result.items()})
    rows = [s.as_row() for s in all_stats]
    counts = {k: len(v) for k, v in result.items()}
    _log_table(rows, counts)
    if output_dir is not None:
        payload = {"sources": rows, "splits": counts, "seed": seed}
        write_json(Path(output_dir) / "data_stats.json", payload)  # temp file unique per process, then rename
    return result, rows


def _read_unique(sources: list[SourceConfig], dedup: bool) -> tuple[list[list[dict]], list[SourceStats]]:
    """Each source's records, exact duplicates (of this or an earlier source) dropped: first occurrence wins."""
    seen: set[bytes] = set()
    per_source: list[list[dict]] = []
    all_stats: list[SourceStats] = []
    for source in sources:
        stats = SourceStats(source.label)
        kept = []
        for record in iter_records(source, stats):
            if dedup:
                key = record_key(record)
                if key in seen:
                    stats.duplicates += 1
                    continue
                seen.add(key)
            kept.append(record)
        if not kept:
            where = source.path or source.hub_id or source.card
            raise UserError(
                f"dataset source {source.label} ({where}) yielded no records: read {stats.read}, skipped "
                f"{dict(stats.skipped) or 0}, duplicates of earlier sources {stats.duplicates}"
            )
        per_source.append(kept)
        all_stats.append(stats)
    return per_source, all_stats


def _log_table(rows: list[dict], splits: dict) -> None:
    header = f"{'source':<24}{'read':>9}{'kept':>9}{'skipped':>9}{'dupes':>9}{'held out':>9}{'train':>10}"
    lines = [header] + [
        f"{r['name'][:23]:<24}{r['read']:>9}{r['kept']:>9}{r['skipped_total']:>9}{r['duplicates']:>9}"
        f"{r['held_out']:>9}{r['selected']:>10}"
        for r in rows
    ]
    logger.info("data mixture (%s):\n%s", ", ".join(f"{k}={v}" for k, v in splits.items()), "\n".join(lines))
