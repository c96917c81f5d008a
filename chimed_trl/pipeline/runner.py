"""Run the stages of a pipeline YAML in order, each as the recipe command a user could run alone.

    python -m chimed_trl.pipeline --config recipes/tiny/pipeline.yaml [--output_dir runs/demo]
                                  [--from STAGE] [--dry-run] [--verbose]

A pipeline YAML::

    output_dir: runs/demo          # every stage writes <output_dir>/<stage name>
    tiny: {seed: 0}                # optional stage zero: `python -m chimed_trl.tiny <output_dir>/tiny`
    stages:
      - name: sft                  # letters, digits, _ and -; also the stage's folder name
        recipe: sft                # recipes/sft.py
        config: recipes/tiny/sft.yaml
        from: pretrain             # --model_name_or_path <output_dir>/pretrain ("tiny" for the built base)
        accelerate_config: accelerate_configs/cpu_2proc.yaml   # optional: run under `accelerate launch`
        num_processes: 2           # optional: `accelerate launch --num_processes 2`
        args: {ddp_backend: gloo}  # extra CLI flags; "{pretrain}" in a value expands to that stage's folder;
                                   # a list of plain values becomes several words (--tasks choice ner), a
                                   # mapping or a list of mappings one JSON word (--datasets '[{...}]')
        done_file: metrics.json    # optional: the file whose presence marks the stage finished

Each stage is printed (shlex-quoted) and run as ``python recipes/R.py --config C --output_dir D ...`` or
``accelerate launch [--config_file X] [--num_processes N] recipes/R.py ...``; ``python`` and
``accelerate launch`` are run with the interpreter that runs the pipeline (``sys.executable`` and
``sys.executable -m accelerate.commands.launch``) so a virtual environment need not be activated.
Its output goes to ``logs/<stage>.log`` (also to the terminal with ``--verbose``); the terminal shows one
status line per stage. A non-zero exit ends the pipeline with one line naming the stage and its log.

Rerunning skips every stage whose ``metrics.json`` exists (the recipes' contract: written last, only
when the stage completed). A stage that stopped half-way is simply run again: the recipes resume from
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
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimed_trl.child import wrap
from chimed_trl.cli import read_yaml_config
from chimed_trl.errors import UserError
from chimed_trl.runs import RunLock, is_secret_key, looks_like_secret, write_json

STATE_FILE = "pipeline_state.json"
TINY = "tiny"
DONE_FILE = "metrics.json"
TINY_DONE_FILE = "tiny_build.json"  # the tiny builder's own marker, written last
PIPELINE_KEYS = {"output_dir", "tiny", "stages"}
STAGE_KEYS = {"name", "recipe", "config", "accelerate_config", "num_processes", "from", "args", "done_file"}
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_-]+)\}")


@dataclass
class Stage:
    name: str
    recipe: str
    config: str | None = None
    accelerate_config: str | None = None
    num_processes: int | None = None
    model_from: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    done_file: str = DONE_FILE

    @property
    def script(self) -> str:
        return f"recipes/{self.recipe}.py"


@dataclass
class Pipeline:
    path: Path
    output_dir: Path
    stages: list[Stage]  # stage zero (the tiny base) first when the YAML asks for it

    def stage_dir(self, name: str) -> Path:
        return self.output_dir / name

    def names(self) -> list[str]:
        return [s.name for s in self.stages]


# ---------------------------------------------------------------- loading and validation


def _fail(path: Path, where: str, msg: str):
    raise UserError(f"{path}: {where}: {msg}")


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(set(), *(_placeholders(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_placeholders(v) for v in value))
    return set()


def _parse_stage(path: Path, i: int, raw: Any, earlier: list[str]) -> Stage:
    where = f"stages[{i}]"
    if not isinstance(raw, dict):
        _fail(path, where, f"expected a mapping with name, recipe, config; got {type(raw).__name__}")
    name = raw.get("name")
    where = f"stages[{i}] ({name})" if name else where
    unknown = sorted(set(raw) - STAGE_KEYS)
    if unknown:
        _fail(path, where, f"unknown key(s) {unknown}; allowed: {sorted(STAGE_KEYS)}")
    for key in ("name", "recipe"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            _fail(path, where, f"'{key}' is required (a string)")
    if not NAME.match(name) or name == TINY:
        _fail(path, where, f"name {name!r} must use letters, digits, _ or - and not be {TINY!r} (stage zero)")
    if name in earlier:
        _fail(path, where, f"duplicate stage name {name!r}")
    if not NAME.match(raw["recipe"]):
        _fail(path, where, f"recipe {raw['recipe']!r} must name a script in recipes/ without .py")
    model_from = raw.get("from")
    if model_from is not None and model_from not in earlier:
        _fail(path, where, f"from: {model_from!r} is not an earlier stage (earlier: {earlier or 'none'})")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        _fail(path, where, "args must be a mapping of flag: value")
    reserved = {"config", "output_dir"} & set(args)
    if reserved:
        _fail(path, where, f"args must not set {sorted(reserved)}: the runner sets them")
    secrets = sorted(
        k for k, v in args.items() if is_secret_key(k) or (str(k).endswith("_env") and looks_like_secret(v))
    )
    if secrets:  # the command line is printed, logged and kept in pipeline_state.json
        _fail(path, where, f"args must not carry secrets ({secrets}): export them instead (e.g. HF_TOKEN)")
    if model_from is not None and "model_name_or_path" in args:
        _fail(path, where, "give either from: or args.model_name_or_path, not both")
    missing = sorted(_placeholders(args) - set(earlier))
    if missing:
        _fail(path, where, f"args refer to {['{' + m + '}' for m in missing]}, which are not earlier stages")
    num = raw.get("num_processes")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        _fail(path, where, f"num_processes must be a positive integer, got {num!r}")
    for key in ("config", "accelerate_config", "done_file"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            _fail(path, where, f"{key} must be a path string")
    if raw.get("config") is None:
        _fail(path, where, "'config' is required (the recipe's YAML)")
    return Stage(
        name=name,
        recipe=raw["recipe"],
        config=raw["config"],
        accelerate_config=raw.get("accelerate_config"),
        num_processes=num,
        model_from=model_from,
        args=args,
        done_file=raw.get("done_file") or DONE_FILE,
    )


def load_pipeline(path: str | os.PathLike, output_dir: str | None = None) -> Pipeline:
    """Parse and check a pipeline YAML; every mistake is one :class:`UserError` line naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pipeline config not found")
    raw = read_yaml_config(str(path))
    if not raw:
        raise UserError(f"{path}: expected a mapping with output_dir and stages")
    unknown = sorted(set(raw) - PIPELINE_KEYS)
    if unknown:
        _fail(path, "top level", f"unknown key(s) {unknown}; allowed: {sorted(PIPELINE_KEYS)}")
    out = output_dir or raw.get("output_dir")
    if not out or not isinstance(out, str):
        _fail(path, "output_dir", "required (or pass --output_dir)")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        _fail(path, "stages", "required: a non-empty list of stages")
    stages: list[Stage] = []
    tiny = raw.get("tiny")
    if tiny is not None:
        if tiny is True:
            tiny = {}
        if not isinstance(tiny, dict) or set(tiny) - {"seed"}:
            _fail(path, "tiny", "expected {seed: INT} (or true) to build the tiny base as stage zero")
        seed = int(tiny.get("seed", 0))
        stages.append(Stage(name=TINY, recipe=TINY, args={"seed": seed}, done_file=TINY_DONE_FILE))
    for i, item in enumerate(stages_raw):
        stages.append(_parse_stage(path, i, item, [s.name for s in stages]))
    return Pipeline(path=path, output_dir=Path(out), stages=stages)


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
    cmd += [stage.script, "--config", stage.config, "--output_dir", out]
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
    """Recipes, configs and accelerate configs the stages name that do not exist (relative to the cwd)."""
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
