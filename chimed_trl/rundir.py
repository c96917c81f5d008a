"""The run-directory contract: what a run, or a rerun, into ``output_dir`` does (every stage, merge, pipeline).

The rules every training recipe follows (``prepare_output_dir`` applies them, before any data is loaded):

- Only our ``resolved_config.yaml`` marks a directory as a run of ours. Anything else that is not empty is
  refused, whatever the flags say; no message of ours advises an action that deletes a file we did not write.
- ``metrics.json`` is written last; its presence means the run finished. Re-running into a finished
  run leaves it alone (:class:`FinishedRun`), or refuses when the config changed; ``overwrite`` (the
  recipes' ``overwrite_output_dir: true``) moves the old run, whole, to ``.previous/<time>/`` and starts
  afresh (nothing is deleted).
- One run per directory: :class:`RunLock` (``.run.lock``, PID + host), taken over when its holder is dead.
- A run refused before it produced anything (bad data, a model that will not load) removes what it wrote
  into a directory it found missing or empty (:func:`remove_if_only_ours`).
- An unfinished run resumes from its newest *complete* checkpoint (``trainer_state.json`` present,
  every safetensors file as long as its header says); half-written ones are skipped with a warning.
- A resume whose config differs from the saved ``resolved_config.yaml`` in a training-relevant key
  is refused, naming the keys (a changed learning rate or epoch count would silently mix two runs).

Writing a run's files (atomically, secrets redacted) is :mod:`chimed_trl.runfiles`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import struct
import tempfile
import time
from pathlib import Path

import yaml

from chimed_trl.errors import UserError
from chimed_trl.runfiles import METRICS_FILE, RESOLVED_CONFIG

logger = logging.getLogger(__name__)
LOCK_FILE = ".run.lock"
PREVIOUS_DIR = ".previous"  # where overwrite_output_dir moves an old run
# what a run writes before it has any result: a refused run that created its directory removes it
BOOKKEEPING_FILES = frozenset({RESOLVED_CONFIG, "train.log", "data_stats.json", LOCK_FILE})
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


@dataclasses.dataclass
class Claim:
    """What :func:`prepare_output_dir` decided for a run's ``output_dir``."""

    out: Path
    resume: str | None = None  # the checkpoint to resume from, or None to start afresh
    fresh: bool = False  # missing or empty before this run: a refusal removes what this run wrote there
    created: bool = False  # missing before this run: a refusal removes the directory too
    moved_to: Path | None = None  # where ``overwrite`` moved the previous run
    lock: RunLock | None = None  # held by the main process for the whole run


_OUR_TEMP = re.compile(r"^\.(write-test-.*|.+\.\d+\.tmp)$")  # check_writable's probe, write_atomic's temp file


def _is_ours_hidden(name: str) -> bool:
    return name in (LOCK_FILE, PREVIOUS_DIR) or bool(_OUR_TEMP.match(name))


def _visible(out: Path) -> list[str]:
    """What makes a directory not empty: everything but our own lock, ``.previous`` and temp files. A user's
    dotfiles count (a ``.git`` or ``.env`` makes a directory theirs)."""
    return sorted(p.name for p in out.iterdir() if not _is_ours_hidden(p.name)) if out.is_dir() else []


def _foreign_dir_error(out: Path, found: list[str]) -> UserError:
    # the advice names no flag: no setting of ours may ever write into (or clear) a directory we did not create
    return UserError(
        f"output_dir {str(out)!r} is not empty and holds no run of this package (no {RESOLVED_CONFIG}; found "
        f"{', '.join(found[:3])}): refusing to write into it. Choose a new or empty output_dir."
    )


def check_output_dir(output_dir: str | Path) -> Claim:
    """The checks that need no config: ``output_dir`` is writable and is new, empty or a run of ours.

    Only our ``resolved_config.yaml`` (written before any training) marks a directory as ours: another
    tool's ``metrics.json`` or ``checkpoint-N`` is never taken for a finished run, resumed, or moved.
    """
    out = Path(output_dir).expanduser()
    created, found = not out.exists(), _visible(out)
    if found and not (out / RESOLVED_CONFIG).is_file():
        raise _foreign_dir_error(out, found)
    check_writable(out)
    return Claim(out=out, fresh=not found, created=created)


def prepare_output_dir(
    output_dir: str | Path,
    resolved: dict,
    overwrite: bool = False,
    is_main_process: bool = True,
    lock: bool = False,
    neutral: frozenset = RESUME_NEUTRAL_KEYS,
) -> Claim:
    """Apply the rerun rules (module docstring) to ``output_dir`` for a run configured as ``resolved``
    (a :func:`resolve_config` dict).

    Returns a :class:`Claim` (the checkpoint to resume from, whether this run created the directory).
    Raises :class:`FinishedRun` when the same run already finished, and :class:`UserError` when the output
    directory cannot be written, holds files that are not a run of this package or a run of another recipe,
    or has a saved config that differs in a training-relevant key. Call it on every rank before loading
    data; with ``overwrite`` the main process moves the old run to ``.previous/<time>/`` (:func:`move_run_aside`).
    With ``lock`` the main process takes the directory's :class:`RunLock` first (before judging or moving
    anything) and keeps it in ``claim.lock``; the caller releases it when the run ends.
    """
    claim = check_output_dir(output_dir)
    if lock and is_main_process:
        claim.lock = RunLock(claim.out).acquire()
    try:
        return _judge(claim, resolved, overwrite, is_main_process, neutral)
    except BaseException:
        if claim.lock is not None:
            claim.lock.release()
        raise


def _judge(claim: Claim, resolved: dict, overwrite: bool, is_main_process: bool, neutral: frozenset) -> Claim:
    out = claim.out
    saved_path = out / RESOLVED_CONFIG
    saved = read_resolved_config(out)
    if saved is not None and recipe_of(saved) != recipe_of(resolved):
        # never, not even with overwrite: that is another stage's model and metrics
        raise UserError(
            f"output_dir {str(out)!r} holds a {recipe_of(saved)!r} run ({RESOLVED_CONFIG}), not a "
            f"{recipe_of(resolved)!r} one: choose another output_dir (overwrite_output_dir only restarts a run "
            "of the same recipe)."
        )
    if overwrite:
        if is_main_process and saved is not None:
            claim.moved_to = move_run_aside(out)
            logger.warning("overwrite_output_dir: the previous run in %s moved to %s", out, claim.moved_to)
        return claim
    finished = is_finished(out) and saved is not None
    claim.resume = None if finished else last_checkpoint(out)
    if saved is not None and (finished or claim.resume):
        diffs = config_differences(saved, resolved, neutral)
        if diffs:
            state = "a finished run" if finished else f"an unfinished run (resumable from {Path(claim.resume).name})"
            raise UserError(
                f"{saved_path}: {out} holds {state} whose config differs in {'; '.join(diffs)}. Rerun with the "
                f"saved settings, set overwrite_output_dir: true to start again (the old run moves to "
                f"{PREVIOUS_DIR}/<time>/), or choose another output_dir."
            )
    if finished:
        raise FinishedRun(
            f"{out} holds a finished run ({METRICS_FILE} exists): its outputs are left alone. Set "
            f"overwrite_output_dir: true to start again (the old run moves to {PREVIOUS_DIR}/<time>/), or choose "
            "another output_dir."
        )
    return claim


def read_resolved_config(output_dir: str | Path) -> dict | None:
    """The ``resolved_config.yaml`` a run of ours saved in ``output_dir`` (None when there is none)."""
    path = Path(output_dir) / RESOLVED_CONFIG
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"{path}: unreadable; was it edited? Choose another output_dir.") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a saved config of this package; choose another output_dir.")
    return saved


def move_run_aside(output_dir: str | Path) -> Path:
    """Move everything in ``output_dir`` (but earlier ``.previous`` runs and the lock) into
    ``.previous/<time>/``: an overwrite keeps the old run (and anything a user put beside it) byte-identical."""
    out = Path(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out / PREVIOUS_DIR / stamp
    suffix = 1
    while dest.exists():
        dest = out / PREVIOUS_DIR / f"{stamp}-{suffix}"
        suffix += 1
    dest.mkdir(parents=True)
    for entry in sorted(out.iterdir()):
        if entry.name not in (PREVIOUS_DIR, LOCK_FILE):
            entry.rename(dest / entry.name)
    return dest


def remove_if_only_ours(claim: Claim, own_files: frozenset[str] = BOOKKEEPING_FILES) -> bool:
    """After a refusal: when this run found ``output_dir`` missing or empty and it now holds nothing but this
    run's own bookkeeping (``resolved_config.yaml``, a ``train.log`` with no results, ...), remove those files
    (and the directory, when this run created it), so nothing is left behind and a corrected rerun starts clean."""
    out = claim.out
    if not claim.fresh or not out.is_dir():
        return False
    entries = list(out.iterdir())
    if any(e.is_dir() or (e.name not in own_files and not e.name.startswith(".write-test-")) for e in entries):
        return False
    for entry in entries:
        entry.unlink(missing_ok=True)
    if claim.created:
        out.rmdir()
    return True


# ---------------------------------------------------------------- one run per directory
def _holder_alive(holder: dict) -> bool:
    """Whether the process that took a lock still runs (another host's process is assumed alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """``<output_dir>/.run.lock`` (PID + host): one run per directory.

    Refused while the holder lives; taken over (with a warning) when the holder is dead, e.g. after a
    SIGKILL. Taken with ``O_EXCL``, so two runs starting at once cannot both win.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        payload = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written by a run starting this very moment
                    time.sleep(0.2)
                    holder = self._holder() or {}
                if _holder_alive(holder):
                    raise UserError(
                        f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}): wait for it to finish or stop it "
                        f"(if that process is gone for good, remove {self.path})."
                    ) from None
                logger.warning("taking over %s from pid %s, which is no longer running", self.path, holder.get("pid"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f)
            self.held = True
            return self
        raise UserError(f"{self.path}: could not take the run lock; is another run starting in the same directory?")

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def release(self) -> None:
        if self.held and (self._holder() or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
