"""Row readers for raw files: JSON lines, JSON arrays, CSV, in any declared encoding.

Each reader yields ``(where, row)`` where ``where`` is ``file:line`` (or ``file[index]``) so that every
later error can name the place. Decoding is line by line, so a wrong encoding is reported at the
first bad line, with the option that fixes it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from chimed_trl.data.records import DataError

DEFAULT_ENCODING = "utf-8-sig"  # utf-8 that also accepts a byte-order mark (CCKS files have one)


def _decoded_lines(path: Path, encoding: str | None) -> Iterator[tuple[int, str]]:
    encoding = encoding or DEFAULT_ENCODING
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding if line_no == 1 else encoding.replace("-sig", ""))
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{line_no}",
                    None,
                    f"cannot decode as {encoding} ({e.reason} at byte {e.start}). If the file uses another "
                    "encoding (the Toyhom/CMD corpora are GB18030), set `encoding: gb18030` on the source or use "
                    "a data card that declares it.",
                ) from None
            yield line_no, line


def read_jsonl(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    for line_no, line in _decoded_lines(path, encoding):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(where, None, f"malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(row).__name__}")
        yield where, row


def read_json(path: Path, encoding: str | None = None):
    """A whole JSON document (array or object); errors name the line."""
    text = "".join(line for _, line in _decoded_lines(path, encoding))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", None, f"malformed JSON ({e.msg} at column {e.colno})") from None


def read_json_array(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    data = read_json(path, encoding)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(str(path), None, f"expected a JSON array of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}[{i}]", None, f"expected a JSON object, got {type(row).__name__}")
        yield f"{path}[{i}]", row


def read_csv(path: Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    lines = (line for _, line in _decoded_lines(path, encoding))
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise DataError(f"{path}:1", None, f"malformed CSV header: {e}") from None
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}", None, f"malformed CSV: {e}") from None
        where = f"{path}:{reader.line_num}"
        if not values:
            continue
        if len(values) != len(header):
            raise DataError(where, None, f"expected {len(header)} columns ({','.join(header)}), got {len(values)}")
        yield where, dict(zip(header, values))


def read_rows(path: str | Path, encoding: str | None = None) -> Iterator[tuple[str, dict]]:
    """Rows of a raw file, chosen by extension (.jsonl/.json/.csv)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, encoding)
    if suffix == ".json":
        # JSON lines saved as .json are common (the MedicalGPT and CMD dumps): sniff the first character.
        with path.open("rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        return read_json_array(path, encoding) if head.startswith(b"[") else read_jsonl(path, encoding)
    if suffix in (".csv", ".tsv"):
        return read_csv(path, encoding)
    raise DataError(str(path), None, f"unsupported file type {suffix!r} (expected .jsonl, .json or .csv)")
