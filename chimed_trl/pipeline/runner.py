"""Run the stages of a pipeline YAML in order, each as the command a user could run alone.

    python -m chimed_trl.pipeline --config recipes/tiny/pipeline.yaml [--output_dir runs/demo]
                                  [--from STAGE] [--dry-run] [--verbose]

The YAML is :mod:`chimed_trl.pipeline.config`'s. Each stage is printed (shlex-quoted) and run as
``python -m chimed_trl.stages.<stage> --config C --output_dir D ...`` or ``accelerate launch [--config_file X]
[--num_processes N] -m chimed_trl.stages.<stage> ...`` (a recipe of the user's own: ``recipes/R.py`` instead), so an
installed package runs its own pipeline from any working directory; ``python`` and ``accelerate launch`` are run
with the interpreter that runs the pipeline (``sys.executable`` and ``sys.executable -m
accelerate.commands.launch``) so a virtual environment need not be activated.
Its output goes to ``logs/<stage>.log`` (also to the terminal with ``--verbose``); the terminal shows one
status line per stage. A non-zero exit ends the pipeline with one line naming the stage and its log.

Rerunning skips every stage whose ``metrics.json`` exists (the stages' contract: written last, only
when the stage completed). A stage that stopped half-way is simply run again: the stages resume from
their last checkpoint. ``--from STAGE`` reruns that stage and every later one: their previous folders are
*moved aside* to ``<output_dir>/.previous/<timestamp>/<stage>`` (never deleted, never overwritten in place),
so a user who wants them back still has them. The runner writes only inside ``output_dir``, and refuses an
existing non-empty ``output_dir`` that it did not create (it marks its own with ``pipeline_state.json``).
After the stages, ``report.md`` / ``report.json`` / charts are written (:mod:`chimed_trl.reporting.pipeline`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chimed_trl.child import wrap
from chimed_trl.errors import UserError
from chimed_trl.pipeline.config import DONE_FILE, PLACEHOLDER, TINY, Pipeline, Stage, load_pipeline
from chimed_trl.rundir import RunLock
from chimed_trl.runfiles import write_json

STATE_FILE = "pipeline_state.json"


# ---------------------------------------------------------------- commands


def _expand(value: Any, pipe: Pipeline) -> Any:
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: str(pipe.stage_dir(m.group(1))), value)
    if isinstance(value, dict):
        return {k: _expand(v, pipe) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, pipe) for v in value]
    return value


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)  # what the recipes' parsers read for list/dict fields
    return str(value)


def stage_command(pipe: Pipeline, stage: Stage) -> list[str]:
    """The command as a user would type it (``python ...`` or ``accelerate launch ...``)."""
    out = str(pipe.stage_dir(stage.name))
    if stage.name == TINY:
        return ["python", "-m", "chimed_trl.tiny", out, "--seed", str(stage.args["seed"])]
    if stage.accelerate_config or stage.num_processes:
        cmd = ["accelerate", "launch"]
        if stage.accelerate_config:
            cmd += ["--config_file", stage.accelerate_config]
        if stage.num_processes:
            cmd += ["--num_processes", str(stage.num_processes)]
    else:
        cmd = ["python"]
    cmd += ["-m", stage.module] if stage.module else [stage.script]
    cmd += ["--config", stage.config, "--output_dir", out]
    if stage.model_from:
        cmd += ["--model_name_or_path", str(pipe.stage_dir(stage.model_from))]
    for flag, value in stage.args.items():
        value = _expand(value, pipe)
        if value is None:
            continue
        if isinstance(value, list) and value and not any(isinstance(v, dict | list) for v in value):
            cmd += [f"--{flag}", *map(_flag_value, value)]  # list[str] fields take several words (nargs="+")
        else:
            cmd += [f"--{flag}", _flag_value(value)]
    return cmd


def executable(cmd: list[str]) -> list[str]:
    """Run ``python``/``accelerate launch`` with this interpreter, so no activated venv is needed."""
    if cmd[:2] == ["accelerate", "launch"]:
        return [sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]]
    if cmd[0] == "python":
        return [sys.executable, *cmd[1:]]
    return cmd


def display(cmd: list[str]) -> str:
    return shlex.join(cmd)


# ---------------------------------------------------------------- state


def is_done(pipe: Pipeline, stage: Stage) -> bool:
    return (pipe.stage_dir(stage.name) / stage.done_file).is_file()


def read_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        return {"stages": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON; move it away to start the pipeline afresh") from None


def claim_output_dir(pipe: Pipeline) -> dict:
    """Create ``output_dir`` or accept one this runner created; never adopt a user's folder."""
    out = pipe.output_dir
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_FILE).is_file():
        raise UserError(
            f"--output_dir {out} is not empty and was not created by the pipeline (no {STATE_FILE}); "
            "choose a new or empty directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    state["config"] = str(pipe.path)
    write_json(out / STATE_FILE, state)
    return state


def move_aside(pipe: Pipeline, names: list[str]) -> Path | None:
    """``--from``: move the folders of the stages to rerun into ``.previous/<timestamp>/`` (kept, not deleted)."""
    present = [n for n in names if pipe.stage_dir(n).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = pipe.output_dir / ".previous" / stamp
    suffix = 1
    while dest.exists():
        dest = pipe.output_dir / ".previous" / f"{stamp}-{suffix}"
        suffix += 1
    dest.mkdir(parents=True)
    for name in present:
        pipe.stage_dir(name).rename(dest / name)
    return dest


# ---------------------------------------------------------------- running


def run_stage(pipe: Pipeline, stage: Stage, verbose: bool) -> tuple[int, float, Path]:
    # logs live beside the stages, never inside: a recipe refuses an output_dir holding files it did not write
    log = pipe.output_dir / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = stage_command(pipe, stage)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.time()
    with log.open("ab") as sink:
        sink.write(f"\n$ {display(cmd)}\n".encode())
        sink.flush()
        # under the supervisor: the stage's whole process tree dies with this pipeline (even on SIGKILL)
        proc = subprocess.Popen(wrap(executable(cmd)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read1(65536):  # whatever is there: progress bars show up promptly
                sink.write(chunk)
                sink.flush()
                if verbose:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            rc = proc.wait()
        except KeyboardInterrupt:  # let the stage stop on its own Ctrl-C (it saves nothing half-written)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return rc, time.time() - start, log


def _summary(pipe: Pipeline, stage: Stage) -> str:
    path = pipe.stage_dir(stage.name) / DONE_FILE
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return ""
    if (
        isinstance(m, dict)
        and isinstance(m.get("loss_first"), int | float)
        and isinstance(m.get("loss_last"), int | float)
    ):
        return f", loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}"
    return ""


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def check_files(pipe: Pipeline) -> list[str]:
    """Recipe scripts of the user's own, configs and accelerate configs the stages name that do not exist (relative
    to the cwd); the package's stages are modules and need no file."""
    missing = []
    for s in pipe.stages:
        if s.name == TINY:
            continue
        for label, p in (("recipe", s.script), ("config", s.config), ("accelerate_config", s.accelerate_config)):
            if p and not Path(p).is_file():
                missing.append(f"stage {s.name}: {label} {p} not found")
    return missing


def plan(pipe: Pipeline, start: str | None) -> list[tuple[Stage, bool]]:
    """(stage, run?) for every stage: run when not finished, or when at/after ``start``."""
    names = pipe.names()
    if start is not None and start not in names:
        raise UserError(f"--from {start!r}: no such stage in {pipe.path} (stages: {', '.join(names)})")
    first = names.index(start) if start is not None else len(names)
    return [(s, i >= first or not is_done(pipe, s)) for i, s in enumerate(pipe.stages)]


def run_pipeline(pipe: Pipeline, start: str | None = None, dry_run: bool = False, verbose: bool = False) -> int:
    steps = plan(pipe, start)
    total = len(steps)
    if dry_run:
        for s in check_files(pipe):
            print(f"# warning: {s}")
        for i, (stage, run) in enumerate(steps):
            status = "run" if run else f"skip ({stage.done_file} exists)"
            print(f"# [{i}/{total - 1}] {stage.name}: {status}")
            print(display(stage_command(pipe, stage)))
        return 0
    missing = check_files(pipe)
    if missing:
        raise UserError(f"{pipe.path}: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if start is not None:
        names = pipe.names()
        for stage in pipe.stages[: names.index(start)]:
            if not is_done(pipe, stage):
                raise UserError(f"--from {start}: earlier stage {stage.name!r} has not finished; run without --from")
    state = claim_output_dir(pipe)
    with RunLock(pipe.output_dir):  # one pipeline per folder: a second one is refused while this one lives
        return _run_steps(pipe, steps, state, start, verbose)


def _run_steps(pipe: Pipeline, steps: list[tuple[Stage, bool]], state: dict, start: str | None, verbose: bool) -> int:
    total = len(steps)
    if start is not None:
        moved = move_aside(pipe, [s.name for s, run in steps if run])
        if moved:
            print(f"previous outputs of the rerun stages moved to {moved}")
    pipeline_start = time.time()
    for i, (stage, run) in enumerate(steps):
        prefix = f"[{i}/{total - 1}] {stage.name}"
        if not run:
            print(f"{prefix}: finished earlier ({stage.done_file} exists), skipped")
            continue
        print(f"{prefix}: {display(stage_command(pipe, stage))}", flush=True)
        rc, wall, log = run_stage(pipe, stage, verbose)
        record = {"command": display(stage_command(pipe, stage)), "log": str(log), "wall_time_s": round(wall, 2)}
        if rc != 0 or not is_done(pipe, stage):
            state["stages"][stage.name] = {**record, "status": "failed", "exit_code": rc}
            write_json(pipe.output_dir / STATE_FILE, state)
            if not verbose:
                print(_tail(log), file=sys.stderr)
            why = f"exit code {rc}" if rc != 0 else f"exit code 0 but no {stage.done_file}"
            print(f"error: stage {stage.name!r} failed ({why}); log: {log}", file=sys.stderr)
            return 1
        state["stages"][stage.name] = {**record, "status": "finished", "finished_at": time.strftime("%F %T")}
        write_json(pipe.output_dir / STATE_FILE, state)
        print(f"{prefix}: done in {wall:.1f} s{_summary(pipe, stage)}", flush=True)
    from chimed_trl.reporting.pipeline import write_report

    report = write_report(pipe, state)
    print(f"pipeline finished in {time.time() - pipeline_start:.1f} s; report: {report}")
    return 0


def build_parser(prog: str = "python -m chimed_trl.pipeline", config: str | None = None) -> argparse.ArgumentParser:
    """The runner's CLI; ``config`` makes ``--config`` optional with that default (the demo's)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=config is None, default=config, help="pipeline YAML")
    parser.add_argument("--output_dir", help="overrides the YAML's output_dir")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="rerun this stage and every later one")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the commands")
    parser.add_argument("--verbose", action="store_true", help="stream each stage's output to the terminal too")
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    try:
        pipe = load_pipeline(args.config, args.output_dir)
        return run_pipeline(pipe, args.start, args.dry_run, args.verbose)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the stage got the same Ctrl-C; its checkpoints stay for the rerun to resume
        print("error: interrupted; rerun the same command to resume (finished stages are skipped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
