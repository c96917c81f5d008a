"""A pipeline YAML, parsed and checked: every mistake is one line naming the file and the key.

    output_dir: runs/demo          # every stage writes <output_dir>/<stage name>
    tiny: {seed: 0}                # optional stage zero: `python -m chimed_trl.tiny <output_dir>/tiny`
    stages:
      - name: sft                  # letters, digits, _ and -; also the stage's folder name
        recipe: sft                # the stage: chimed_trl.stages.sft (= recipes/sft.py)
        config: recipes/tiny/sft.yaml
        from: pretrain             # --model_name_or_path <output_dir>/pretrain ("tiny" for the built base)
        accelerate_config: accelerate_configs/cpu_2proc.yaml   # optional: run under `accelerate launch`
        num_processes: 2           # optional: `accelerate launch --num_processes 2`
        args: {ddp_backend: gloo}  # extra CLI flags; "{pretrain}" in a value expands to that stage's folder;
                                   # a list of plain values becomes several words (--tasks choice ner), a
                                   # mapping or a list of mappings one JSON word (--datasets '[{...}]')
        done_file: metrics.json    # optional: the file whose presence marks the stage finished

``recipe`` names one of the package's stages (:data:`chimed_trl.stages.STAGES`: the recipe scripts' names,
``augment_rewards`` included), run as ``python -m chimed_trl.stages.<stage>`` wherever the package is installed;
any other name is a script of the user's own, ``recipes/<recipe>.py`` relative to the working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimed_trl.bundled import bundled_path
from chimed_trl.cli import read_yaml_config
from chimed_trl.errors import UserError
from chimed_trl.runfiles import is_secret_key, looks_like_secret

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
    def module(self) -> str | None:
        """The package's stage module that runs this recipe (``python -m`` it), or None for a script of the user's."""
        from chimed_trl.stages import STAGES

        return f"chimed_trl.stages.{STAGES[self.recipe]}" if self.recipe in STAGES else None

    @property
    def script(self) -> str | None:
        """A recipe that is not one of the package's stages: the user's ``recipes/<recipe>.py`` (from the cwd)."""
        return None if self.module else f"recipes/{self.recipe}.py"


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
        _fail(path, where, f"recipe {raw['recipe']!r} must name a stage (sft, reward, ...) or a recipes/ script")
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
        config=_shipped(raw["config"]),
        accelerate_config=_shipped(raw.get("accelerate_config")),
        num_processes=num,
        model_from=model_from,
        args=args,
        done_file=raw.get("done_file") or DONE_FILE,
    )


def _shipped(path: str | None) -> str | None:
    """A config path as given, or the package's shipped copy when the working directory has no such file."""
    return None if path is None else str(bundled_path(path))


def load_pipeline(path: str | os.PathLike, output_dir: str | None = None) -> Pipeline:
    """Parse and check a pipeline YAML; every mistake is one :class:`UserError` line naming file and key."""
    path = bundled_path(path)
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
        seed = tiny.get("seed", 0) if isinstance(tiny, dict) else None  # int('abc') was a traceback
        if not isinstance(tiny, dict) or set(tiny) - {"seed"} or not isinstance(seed, int) or isinstance(seed, bool):
            _fail(path, "tiny", "expected {seed: INT} (or true) to build the tiny base as stage zero")
        stages.append(Stage(name=TINY, recipe=TINY, args={"seed": seed}, done_file=TINY_DONE_FILE))
    for i, item in enumerate(stages_raw):
        stages.append(_parse_stage(path, i, item, [s.name for s in stages]))
    return Pipeline(path=path, output_dir=Path(out), stages=stages)
