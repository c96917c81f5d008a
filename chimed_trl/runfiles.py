"""The files a run writes, and how: atomically (temp file + fsync + rename), and never with a secret in them.

Kept apart from the run-directory contract (:mod:`chimed_trl.rundir`) because most of its users are not claiming a
directory: report writers only need :func:`write_json`, API clients :func:`api_key_from_env`, the pipeline the
secret checks. Secrets: keys naming a token, key, secret or password are redacted from every saved config;
``*_env`` keys hold the *name* of a variable (kept), never a key (refused); :func:`move_secrets_to_env` takes
``hub_token`` off the training arguments (which the trainer pickles into ``training_args.bin``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from chimed_trl.errors import UserError

# keys holding secrets (not eos_token, pad_token, include_num_input_tokens_seen: those are not secrets)
SECRET_KEY = re.compile(r"(api_key|hub_token|auth_token|access_token|^token$|secret|password)", re.IGNORECASE)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_PREFIX = re.compile(r"^(sk|hf|pk|rk|xox[abp])[-_]", re.IGNORECASE)  # OpenAI, Hugging Face, Stripe, Slack keys
METRICS_FILE = "metrics.json"
RESOLVED_CONFIG = "resolved_config.yaml"


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


def is_secret_key(key: Any) -> bool:
    """Whether a config key holds a secret. ``*_env`` keys (``api_key_env``) hold the *name* of the variable
    that holds one: kept in saved configs, so a reader knows what to export."""
    key = str(key)
    return bool(SECRET_KEY.search(key)) and not key.endswith("_env")


def looks_like_secret(value: Any) -> bool:
    """A value that cannot be an environment variable's name (``sk-...`` pasted into ``api_key_env``)."""
    return (
        isinstance(value, str) and bool(value) and (not ENV_NAME.match(value) or KEY_PREFIX.match(value) is not None)
    )


def redact(value: Any) -> Any:
    """Drop secrets (keys naming a token, key, secret or password) from anything we save; an ``*_env`` value
    that is a key rather than a variable name is dropped too."""
    if isinstance(value, dict):
        return {
            k: (
                "<redacted>"
                if v and (is_secret_key(k) or (str(k).endswith("_env") and looks_like_secret(v)))
                else redact(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def check_env_name(value: str | None, where: str) -> None:
    """``api_key_env`` must name an environment variable; a pasted key is refused without repeating it."""
    if value and looks_like_secret(value):
        raise UserError(
            f"{where}: expects the name of an environment variable (e.g. OPENAI_API_KEY), not a key; export the "
            "key in a variable and name that variable here (the value given is not shown)"
        )


def api_key_from_env(name: str | None, where: str, default: str = "EMPTY") -> str:
    """The API key in the variable ``name`` names (``default`` when no name is given: servers without auth,
    such as vLLM or ``transformers serve``, take any key). The key itself is never printed."""
    if not name:
        return default
    check_env_name(name, where)
    key = os.environ.get(name)
    if not key:
        raise UserError(f"{where}: environment variable {name} is not set; export it with your API key")
    return key


def move_secrets_to_env(training_args) -> None:
    """Take ``hub_token`` off the arguments (the trainer pickles them into every ``training_args.bin``) and
    hand it to ``huggingface_hub`` through ``HF_TOKEN``, which it reads at each call."""
    token = getattr(training_args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        training_args.hub_token = None


def _as_dict(obj: Any) -> dict:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
    return dict(obj)


def resolve_config(**sections: Any) -> dict:
    """``{section: {key: value}}`` of every argument (after YAML + CLI), JSON-plain, secrets redacted."""
    return {name: redact(json.loads(json.dumps(_as_dict(obj), default=str))) for name, obj in sections.items()}


def save_resolved_config(output_dir: str | Path, **sections: Any) -> Path:
    """``resolved_config.yaml``: every argument the run used (after YAML + CLI), secrets redacted."""
    return write_resolved_config(output_dir, resolve_config(**sections))


def write_resolved_config(output_dir: str | Path, resolved: dict) -> Path:
    return write_atomic(
        Path(output_dir) / RESOLVED_CONFIG, yaml.safe_dump(resolved, allow_unicode=True, sort_keys=True)
    )
