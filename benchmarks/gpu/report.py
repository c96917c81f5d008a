"""The results schema (one JSON record per check) and the figures file, ``benchmarks/gpu/RESULTS.md``.

``results.json`` beside it keeps the latest record of each check with the environment it ran in, so
checks run in separate commands (``--only``) accumulate into one RESULTS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu.common import STATUSES
from chimed_trl.runfiles import write_atomic, write_json

CHECKS = ("device", "pretrain_throughput", "qlora_memory", "zero3_sft", "listwise_reward", "generation")
# Figures a check must report when it passed on CUDA (None is allowed only on the CPU dry run).
REQUIRED = {
    "device": ("measured_matmul_tflops",),
    "pretrain_throughput": ("measured_matmul_tflops", "backends"),
    "qlora_memory": ("step_s", "peak_allocated_gib", "peak_reserved_gib", "trainable_params"),
    "zero3_sft": ("steps", "loss_last", "wall_s"),
    "listwise_reward": ("step_s", "loss_last", "peak_allocated_gib"),
    "generation": ("samples_per_s", "samples", "prompts"),
}
NEVER_PASSED = ("flash_attention_2", "vllm")  # parts that cannot travel: skipped with a reason, never passed
RUN_COMMAND = "python3 -m benchmarks.gpu"


def parts_of(record: dict) -> dict[str, dict]:
    """Sub-results carrying their own status (per backend, per stage), wherever they sit in the record."""
    found = {}

    def walk(node, name):
        if isinstance(node, dict):
            if name and "status" in node and node is not record:
                found[name] = node
            for key, value in node.items():
                walk(value, key)

    walk(record, "")
    return found


def validate(record: dict) -> list[str]:
    """Problems with one check's record (empty when it is well formed)."""
    problems = []
    for key in ("check", "mode", "status", "figures"):
        if key not in record:
            problems.append(f"missing {key!r}")
    if problems:
        return problems
    check, status, mode = record["check"], record["status"], record["mode"]
    if check not in CHECKS:
        problems.append(f"unknown check {check!r}")
    if mode not in ("cuda", "dry-run"):
        problems.append(f"mode must be cuda or dry-run, got {mode!r}")
    for name, part in [(check, record), *parts_of(record).items()]:
        if part.get("status") not in STATUSES:
            problems.append(f"{name}: status must be one of {STATUSES}, got {part.get('status')!r}")
        elif part["status"] != "passed" and not part.get("reason") and part is not record:
            problems.append(f"{name}: {part['status']} without a reason")
        if name in NEVER_PASSED and part.get("status") == "passed" and mode == "cuda":
            problems.append(f"{name}: cannot be carried to the GPU machine, so it cannot have passed")
    if status != "passed" and not record.get("reason") and not parts_of(record):
        problems.append(f"{check}: {status} without a reason")
    if status == "passed" and check in REQUIRED:
        for key in REQUIRED[check]:
            if key not in record["figures"]:
                problems.append(f"{check}: passed without figure {key!r}")
            elif record["figures"][key] is None and mode == "cuda":
                problems.append(f"{check}: figure {key!r} is None on a CUDA run")
    try:
        json.dumps(record)
    except (TypeError, ValueError) as exc:
        problems.append(f"{check}: not JSON-serialisable ({exc})")
    return problems


def merge(path: Path, records: list[dict], env: dict) -> dict:
    """Latest record per check, each stamped with the environment it ran in."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    for record in records:
        stored[record["check"]] = {**record, "environment": env}
    return {name: stored[name] for name in CHECKS if name in stored}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _table(rows: dict) -> list[str]:
    lines = ["| figure | value |", "|---|---|"]
    for key, value in rows.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_cell(v)}" for k, v in value.items() if not isinstance(v, dict))
        lines.append(f"| {key} | {_cell(value)} |")
    return lines


def _section(record: dict) -> list[str]:
    env = record.get("environment", {})
    lines = [f"## {record['check']}: **{record['status']}** ({record['mode']})", ""]
    lines.append(
        f"{env.get('device')} (driver {env.get('driver')}), {env.get('date')}; command: "
        f"`{RUN_COMMAND}{' --dry-run' if record['mode'] == 'dry-run' else ''} --only {record['check']}`"
    )
    if record.get("reason"):
        lines += ["", f"Reason: {record['reason']}"]
    lines += ["", *_table({k: v for k, v in record["figures"].items() if not isinstance(v, dict)})]
    for name, part in record["figures"].items():
        if isinstance(part, dict):
            for sub, fields in part.items():
                lines += ["", f"### {name}: {sub}", "", *_table(fields)]
    if record.get("config"):
        lines += ["", "Config: " + ", ".join(f"{k}={_cell(v)}" for k, v in record["config"].items())]
    return lines + [""]


def render(stored: dict) -> str:
    dry = any(r["mode"] == "dry-run" for r in stored.values())
    lines = ["# GPU validation suite: results", ""]
    if dry:
        lines += ["**CPU dry run: tiny shapes on CPU; these are NOT GPU figures.**", ""]
    lines += [
        f"Written by `{RUN_COMMAND}` (see `benchmarks/gpu/__init__.py`). One section per check, each with the",
        "device, driver and date it ran on. Package versions of the latest run:",
        "",
    ]
    latest = max(stored.values(), key=lambda r: r.get("environment", {}).get("date", ""))
    versions = latest.get("environment", {}).get("versions", {})
    lines += [", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    for record in stored.values():
        lines += _section(record)
    return "\n".join(lines)


def write(results_dir: Path, records: list[dict], env: dict) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stored = merge(results_dir / "results.json", records, env)
    write_json(results_dir / "results.json", stored)
    write_atomic(results_dir / "RESULTS.md", render(stored))
    return results_dir / "RESULTS.md"
