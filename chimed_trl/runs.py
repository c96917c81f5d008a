"""Run bookkeeping: atomic JSON/YAML outputs, the resolved config, and what a rerun into ``output_dir`` does.

The rules every training recipe follows (``prepare_output_dir`` applies them, before any data is loaded):

- ``metrics.json`` is written last; its presence means the run finished. Re-running into a finished
  run leaves it alone (:class:`FinishedRun`), or refuses when the config changed; ``overwrite`` (the
  recipes' ``overwrite_output_dir: true``) deletes the run's own checkpoints and ``metrics.json`` and
  trains from scratch.
- An unfinished run resumes from its newest *complete* checkpoint (``trainer_state.json`` present,
  every safetensors file as long as its header says); half-written ones are skipped with a warning.
- A resume whose config differs from the saved ``resolved_config.yaml`` in a training-relevant key
  is refused, naming the keys (a changed learning rate or epoch count would silently mix two runs).
- Secrets never reach a file: :func:`move_secrets_to_env` takes ``hub_token`` off the training
  arguments (which the trainer pickles into ``training_args.bin``) and into ``HF_TOKEN``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import yaml

from chimed_trl.errors import UserError

logger = logging.getLogger(__name__)
# keys holding secrets (not eos_token, pad_token, include_num_input_tokens_seen: those are not secrets)
SECRET_KEY = re.compile(r"(api_key|hub_token|auth_token|access_token|^token$|secret|password)", re.IGNORECASE)
METRICS_FILE = "metrics.json"
RESOLVED_CONFIG = "resolved_config.yaml"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Keys that may change between a run and its resume without changing what is trained: where and how
# often it logs and saves, the data loader's worker count, the hub destination, the launcher's backend.
RESUME_NEUTRAL_KEYS = frozenset(
    """output_dir logging_dir logging_steps logging_first_step logging_strategy logging_nan_inf_filter report_to
    run_name project trackio_space_id disable_tqdm log_level log_level_replica log_on_each_node save_strategy
    save_steps save_total_limit save_on_each_node save_only_model overwrite_output_dir resume_from_checkpoint
    push_to_hub hub_model_id hub_strategy hub_token hub_private_repo hub_always_push hub_revision
    dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers dataloader_prefetch_factor
    dataset_num_proc ddp_backend ddp_timeout eval_steps eval_strategy eval_delay eval_on_start
    per_device_eval_batch_size eval_accumulation_steps local_rank build_tiny_model""".split()
)


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
        return {k: ("<redacted>" if SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


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


def move_secrets_to_env(training_args) -> None:
    """Take ``hub_token`` off the arguments (the trainer pickles them into every ``training_args.bin``) and
    hand it to ``huggingface_hub`` through ``HF_TOKEN``, which it reads at each call."""
    token = getattr(training_args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        training_args.hub_token = None


def is_finished(output_dir: str | Path) -> bool:
    """A run is finished when its ``metrics.json`` exists (written last, atomically)."""
    return (Path(output_dir) / METRICS_FILE).is_file()


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unreadable or shorter than its header says (a crash mid-write), or None."""
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, ValueError):
        return f"{path.name} has no readable header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    size = path.stat().st_size
    return None if size == expected else f"{path.name} has {size} bytes, its header says {expected} (truncated)"


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why a ``checkpoint-N`` directory cannot be resumed from (half-written), or None if it is complete."""
    checkpoint = Path(checkpoint)
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save did not finish)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except ValueError:
        return "trainer_state.json is not valid JSON"
    for weights in sorted(checkpoint.glob("*.safetensors")):
        problem = _safetensors_problem(weights)
        if problem:
            return problem
    return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` directories of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``, to resume from; half-written ones are skipped."""
    for checkpoint in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning("skipping half-written checkpoint %s: %s", checkpoint, problem)
    return None


def config_differences(saved: dict, current: dict, neutral: frozenset = RESUME_NEUTRAL_KEYS) -> list[str]:
    """``section.key: old -> new`` for each training-relevant key that differs between two resolved configs."""
    out = []
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if key not in neutral and old.get(key) != new.get(key):
                out.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def recipe_of(resolved: dict) -> str:
    """Which recipe wrote a resolved config: its ``run.recipe``, else (older runs) the LM stage or its sections."""
    run = resolved.get("run") if isinstance(resolved.get("run"), dict) else {}
    script = resolved.get("script") if isinstance(resolved.get("script"), dict) else {}
    return str(run.get("recipe") or script.get("stage") or "+".join(sorted(resolved)))


def check_writable(output_dir: str | Path) -> Path:
    """Create ``output_dir`` and prove it can be written, before hours of data loading."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output_dir {str(out)!r} cannot be written: {e.strerror or e}") from None
    return out


class FinishedRun(UserError):
    """``output_dir`` holds a finished run with the same config: nothing to do (not an error for a rerun)."""


def prepare_output_dir(
    output_dir: str | Path, resolved: dict, overwrite: bool = False, is_main_process: bool = True
) -> str | None:
    """Apply the rerun rules (module docstring) to ``output_dir`` for a run configured as ``resolved``
    (a :func:`resolve_config` dict).

    Returns the checkpoint to resume from (or None to start afresh). Raises :class:`FinishedRun` when
    the same run already finished, and :class:`UserError` when the output directory cannot be written,
    holds files that are not a run of this package, or has a saved config that differs in a
    training-relevant key. Call it on every rank before loading data; with ``overwrite`` the main
    process deletes the old run's checkpoints and ``metrics.json`` (:func:`clear_run`).
    """
    out = check_writable(output_dir)
    saved_path = out / RESOLVED_CONFIG
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) if saved_path.is_file() else None
    if isinstance(saved, dict) and recipe_of(saved) != recipe_of(resolved):
        # never, not even with overwrite: clear_run would delete another stage's model and metrics
        raise UserError(
            f"output_dir {str(out)!r} holds a {recipe_of(saved)!r} run ({RESOLVED_CONFIG}), not a "
            f"{recipe_of(resolved)!r} one: choose another output_dir (overwrite_output_dir only restarts a run "
            "of the same recipe)."
        )
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    # only our resolved_config.yaml (written before any training) marks a directory as ours: another tool's
    # metrics.json or checkpoint-N must not be taken for a finished run or resumed (or deleted by overwrite)
    if foreign and not (out / RESOLVED_CONFIG).is_file():
        raise UserError(
            f"output_dir {str(out)!r} is not empty and holds no run of this package (no {RESOLVED_CONFIG}; found "
            f"{', '.join(sorted(foreign)[:3])}): refusing to write into it. Choose a new or empty output_dir."
        )
    if overwrite:
        if is_main_process:
            clear_run(out)
        return None
    finished = is_finished(out)
    resume = None if finished else last_checkpoint(out)
    if saved is not None and (finished or resume):
        diffs = config_differences(saved, resolved)
        if diffs:
            state = "a finished run" if finished else f"an unfinished run (resumable from {Path(resume).name})"
            raise UserError(
                f"{saved_path}: {out} holds {state} whose config differs in {'; '.join(diffs)}. Rerun with the "
                "saved settings, set overwrite_output_dir: true to train again from scratch, or choose another "
                "output_dir."
            )
    if finished:
        raise FinishedRun(
            f"{out} holds a finished run ({METRICS_FILE} exists): its outputs are left alone. Set "
            "overwrite_output_dir: true to train again from scratch, or choose another output_dir."
        )
    return resume


def clear_run(output_dir: str | Path) -> None:
    """For ``overwrite_output_dir``: delete this package's run outputs (checkpoints, metrics) and nothing else."""
    out = Path(output_dir)
    for checkpoint in checkpoints(out):
        shutil.rmtree(checkpoint)
    (out / METRICS_FILE).unlink(missing_ok=True)
