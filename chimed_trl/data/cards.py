"""Data cards: ``data_cards/NAME.md``, Hugging Face dataset-card style, with YAML front matter.

Where the cards are read from (first that exists): ``$CHIMED_DATA_CARDS``; the cards shipped in the
installed package (``chimed_trl/data_cards/``, copied from the repository's ``data_cards/`` at build
time by ``setup.py``); the repository's ``data_cards/`` in a source checkout or editable install.

The front matter is what the code reads: ``name``, ``source`` (hub id or repository), ``config``,
``splits``, ``formatter``, ``format``, ``license``, ``encoding``. The Markdown body is for people.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REQUIRED_KEYS = ("name", "source", "formatter", "format", "license")


def cards_dir() -> Path:
    """``$CHIMED_DATA_CARDS``, else the package's shipped cards, else the source checkout's ``data_cards/``."""
    env = os.environ.get("CHIMED_DATA_CARDS")
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parents[1] / "data_cards"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "data_cards"


@dataclass
class DataCard:
    name: str
    source: str
    formatter: str
    format: str
    license: str
    config: str | None = None
    splits: list[str] = field(default_factory=list)
    encoding: str | None = None
    path: Path | None = None
    extra: dict = field(default_factory=dict)


def parse_card(path: str | Path) -> DataCard:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise ValueError(f"{path}: a data card starts with a YAML front matter between `---` lines")
    try:
        _, front, _ = text.split("---", 2)
        meta = yaml.safe_load(front) or {}
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: malformed front matter: {e}") from None
    missing = [k for k in REQUIRED_KEYS if not meta.get(k)]
    if missing:
        raise ValueError(f"{path}: front matter is missing {', '.join(missing)}")
    known = {"name", "source", "formatter", "format", "license", "config", "splits", "encoding"}
    return DataCard(
        name=meta["name"],
        source=meta["source"],
        formatter=meta["formatter"],
        format=meta["format"],
        license=meta["license"],
        config=meta.get("config"),
        splits=list(meta.get("splits") or []),
        encoding=meta.get("encoding"),
        path=path,
        extra={k: v for k, v in meta.items() if k not in known},
    )


def load_card(name: str) -> DataCard:
    path = cards_dir() / f"{name}.md"
    if not path.exists():
        available = sorted(p.stem for p in cards_dir().glob("*.md"))
        raise ValueError(f"Unknown data card {name!r} (looked for {path}); available: {', '.join(available)}")
    return parse_card(path)


def all_cards() -> list[DataCard]:
    return [parse_card(p) for p in sorted(cards_dir().glob("*.md")) if p.stem.lower() != "readme"]
