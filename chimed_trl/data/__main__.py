"""Inspect a source: ``python -m chimed_trl.data stats|show --card NAME --path FILE``.

``stats`` prints record counts, skip counts by reason and length percentiles in tokens of
``--tokenizer`` (default: the embedded tiny model's, trained on the spot); ``show`` prints the
first ``-n`` canonical records as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys

from chimed_trl.data.records import DataError, record_text
from chimed_trl.data.sources import SourceConfig, SourceStats, iter_records

TINY_TOKENIZER = "the embedded tiny model's (2,048-token byte-level BPE; pass --tokenizer for your model's)"


def _percentiles(values: list[int], points=(50, 90, 99, 100)) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {f"p{p}": ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))] for p in points}


def stats(source: SourceConfig, tokenizer_name: str | None) -> dict:
    if tokenizer_name:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    else:
        from chimed_trl.tiny import train_tokenizer

        tokenizer = train_tokenizer()
    counts = SourceStats(source.label)
    # verbose=False: lengths are what we measure, so "longer than the maximum sequence length" is not news
    lengths = [
        len(tokenizer(record_text(r), add_special_tokens=False, verbose=False).input_ids)
        for r in iter_records(source, counts)
    ]
    row = counts.as_row()
    return {
        "source": source.label,
        "tokenizer": tokenizer_name or TINY_TOKENIZER,
        "records": row["kept"],
        "read": row["read"],
        "skipped": row["skipped"],
        "tokens": sum(lengths),
        "length_tokens": _percentiles(lengths),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chimed_trl.data", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stats", "show"])
    parser.add_argument("--card")
    parser.add_argument("--formatter")
    parser.add_argument("--path")
    parser.add_argument("--encoding")
    parser.add_argument("--tokenizer", help="a tokenizer path or hub id (default: the tiny model's)")
    parser.add_argument("-n", type=int, default=3, help="records to show")
    args = parser.parse_args(argv)
    try:
        source = SourceConfig(card=args.card, formatter=args.formatter, path=args.path, encoding=args.encoding)
        if args.command == "show":
            for i, record in enumerate(iter_records(source)):
                if i >= args.n:
                    break
                print(json.dumps(record, ensure_ascii=False))
        else:
            print(json.dumps(stats(source, args.tokenizer), ensure_ascii=False, indent=2))
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
