"""Run bookkeeping: atomic JSON/YAML outputs, the resolved config, resuming from the last checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

_SECRET = re.compile(r"(api_key|token|secret|password)", re.IGNORECASE)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write via a temp file + fsync + rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    return write_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")


def redact(value: Any) -> Any:
    """Drop secrets (keys naming a token, key, secret or password) from anything we save."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET.search(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _as_dict(obj: Any) -> dict:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
    return dict(obj)


def save_resolved_config(output_dir: str | Path, **sections: Any) -> Path:
    """``resolved_config.yaml``: every argument the run used (after YAML + CLI), secrets redacted."""
    payload = {name: redact(json.loads(json.dumps(_as_dict(obj), default=str))) for name, obj in sections.items()}
    return write_atomic(
        Path(output_dir) / "resolved_config.yaml", yaml.safe_dump(payload, allow_unicode=True, sort_keys=True)
    )


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir``, to resume from, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
