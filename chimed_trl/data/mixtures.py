"""Mixtures: several sources, weighted, de-duplicated across sources, split into train/held-out.

De-duplication is exact on normalised text (NFKC, lower-case, whitespace removed) of the whole
record, first occurrence wins (sources in the order given). Weights apply after de-duplication.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import unicodedata
from pathlib import Path

from chimed_trl.data.records import record_text
from chimed_trl.data.sources import SourceConfig, SourceStats, iter_records, resolve
from chimed_trl.runs import write_json

logger = logging.getLogger(__name__)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", text)).lower()


def record_key(record: dict) -> bytes:
    return hashlib.blake2b(normalise(record_text(record)).encode("utf-8"), digest_size=16).digest()


def _apply_weight(records: list[dict], weight: float, rng: random.Random) -> list[dict]:
    if weight <= 1.0:
        n = round(weight * len(records))
        return rng.sample(records, n) if n < len(records) else list(records)
    n = int(weight)
    if n <= len(records):
        return rng.sample(records, n)
    copies, rest = divmod(n, len(records))
    return records * copies + rng.sample(records, rest)


def build_mixture(
    sources: list[SourceConfig],
    seed: int = 0,
    test_size: float = 0.0,
    dedup: bool = True,
    output_dir: str | Path | None = None,
):
    """Returns ``(DatasetDict with "train" [and "test"], stats rows)``; writes ``data_stats.json``."""
    from datasets import Dataset, DatasetDict

    if not sources:
        raise ValueError("the mixture has no sources: add at least one entry under `datasets:`")
    formats = {resolve(s)[1] for s in sources}
    if len(formats) > 1:
        raise ValueError(f"a mixture mixes record formats {sorted(formats)}: use one format per mixture")
    rng = random.Random(seed)
    seen: set[bytes] = set()
    mixed: list[dict] = []
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
        selected = _apply_weight(kept, source.weight, rng) if kept else []
        stats.selected = len(selected)
        mixed += selected
        all_stats.append(stats)
    if not mixed:
        raise ValueError("the mixture is empty after skipping and de-duplication: check the sources")
    rng.shuffle(mixed)
    n_test = int(round(test_size * len(mixed))) if test_size < 1 else int(test_size)
    if test_size and not 0 < n_test < len(mixed):
        raise ValueError(f"test_size={test_size} leaves no train or no test records out of {len(mixed)}")
    splits = {"train": mixed[n_test:]}
    if n_test:
        splits["test"] = mixed[:n_test]
    rows = [s.as_row() for s in all_stats]
    _log_table(rows, {k: len(v) for k, v in splits.items()})
    if output_dir is not None:
        payload = {"sources": rows, "splits": {k: len(v) for k, v in splits.items()}, "seed": seed}
        write_json(Path(output_dir) / "data_stats.json", payload)  # temp file unique per process, then rename
    return DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}), rows


def _log_table(rows: list[dict], splits: dict) -> None:
    header = f"{'source':<24}{'read':>9}{'kept':>9}{'skipped':>9}{'dupes':>9}{'selected':>10}"
    lines = [header] + [
        f"{r['name'][:23]:<24}{r['read']:>9}{r['kept']:>9}{r['skipped_total']:>9}{r['duplicates']:>9}{r['selected']:>10}"
        for r in rows
    ]
    logger.info("data mixture (%s):\n%s", ", ".join(f"{k}={v}" for k, v in splits.items()), "\n".join(lines))
