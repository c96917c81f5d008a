"""Row readers for raw files: JSON lines, JSON documents (array or object), CSV, TSV, plain text.

A UTF-8 byte-order mark is accepted in every UTF-8 file (whether the encoding is the default or
declared as ``utf-8``). ``.txt``: one ``{"text": ...}`` row per line (``txt_documents="line"``) or per
blank-line separated block (``"paragraph"``); blank lines are not rows.

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
from chimed_trl.errors import json_problem

DEFAULT_ENCODING = "utf-8-sig"  # utf-8 that also accepts a byte-order mark (CCKS files have one)
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")
TXT_DOCUMENTS = ("line", "paragraph")


def _decoded_lines(path: Path, encoding: str | None) -> Iterator[tuple[int, str]]:
    encoding = encoding or DEFAULT_ENCODING
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = DEFAULT_ENCODING  # a BOM is not text: strip it from the first line
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
            raise DataError(where, None, f"malformed JSON ({json_problem(e)})") from None
        if not isinstance(row, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(row).__name__}")
        yield where, row


def read_json(path: Path, encoding: str | None = None):
    """A whole JSON document (array or object); errors name the line."""
    text = "".join(line for _, line in _decoded_lines(path, encoding))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", None, f"malformed JSON ({json_problem(e)})") from None


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


def read_csv(path: Path, encoding: str | None = None, delimiter: str = ",") -> Iterator[tuple[str, dict]]:
    lines = (line for _, line in _decoded_lines(path, encoding))
    # TSV has no quoting: a quote character is text
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
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


def read_txt(path: Path, encoding: str | None = None, txt_documents: str = "line") -> Iterator[tuple[str, dict]]:
    """Plain text: a document per line, or per blank-line separated paragraph (``where`` is its first line)."""
    if txt_documents == "line":
        for line_no, line in _decoded_lines(path, encoding):
            if line.strip():
                yield f"{path}:{line_no}", {"text": line.rstrip("\r\n")}
        return
    block: list[str] = []
    first = 0
    for line_no, line in _decoded_lines(path, encoding):
        if line.strip():
            first = first if block else line_no
            block.append(line.rstrip("\r\n"))
        elif block:
            yield f"{path}:{first}", {"text": "\n".join(block)}
            block = []
    if block:
        yield f"{path}:{first}", {"text": "\n".join(block)}


def _is_json_lines(path: Path, encoding: str | None) -> bool:
    """A ``.json`` file is JSON lines when its first non-blank line is a whole JSON object by itself (the
    MedicalGPT and CMD dumps); an array, or an object spread over lines, is one JSON document."""
    for _, line in _decoded_lines(path, encoding):
        if not line.strip():
            continue
        if line.lstrip().startswith("["):
            return False
        try:
            return isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            return False
    return True


def files_in(directory: Path) -> list[Path]:
    """The data files of a directory tree, sorted; hidden files and other suffixes are ignored."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not any(part.startswith(".") for part in p.parts)
    )


def read_rows(
    path: str | Path, encoding: str | None = None, txt_documents: str = "line"
) -> Iterator[tuple[str, dict]]:
    """Rows of a raw file, chosen by extension (.jsonl/.ndjson, .json, .csv, .tsv, .txt)."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, encoding)
    if suffix == ".json":
        return read_jsonl(path, encoding) if _is_json_lines(path, encoding) else read_json_array(path, encoding)
    if suffix == ".csv":
        return read_csv(path, encoding)
    if suffix == ".tsv":
        return read_csv(path, encoding, delimiter="\t")
    if suffix == ".txt":
        return read_txt(path, encoding, txt_documents)
    raise DataError(str(path), None, f"unsupported file type {suffix!r} (expected one of {', '.join(DATA_SUFFIXES)})")
