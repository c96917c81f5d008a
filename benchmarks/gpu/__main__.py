"""Entry point: ``python -m benchmarks.gpu [--dry-run] [--only CHECK ...] [--results DIR]``.

Prints one JSON line per check to stdout; on CUDA writes ``benchmarks/gpu/RESULTS.md`` (and
``results.json``). Exit status: 0 when no check failed, 1 when one did, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.gpu.common import REPO, json_line  # noqa: E402
from benchmarks.gpu.install import ensure_packages  # noqa: E402
from benchmarks.gpu.report import CHECKS, parts_of, validate, write  # noqa: E402
from chimed_trl.errors import UserError  # noqa: E402  (the environment above must be set first)

DEFAULT_RESULTS = REPO / "benchmarks" / "gpu"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, one optimizer step per check")
    parser.add_argument("--only", action="append", choices=CHECKS, help="run only this check (repeatable)")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"folder for RESULTS.md + results.json (default on CUDA: {DEFAULT_RESULTS}; dry run: none written)",
    )
    parser.add_argument(
        "--deepspeed-on-cpu",
        action="store_true",
        help="dry run: launch zero3_sft through accelerate_configs/deepspeed_zero3.yaml on CPU (DeepSpeed compiles "
        "its shared-memory op on first use: about a minute)",
    )
    return parser.parse_args(argv)


def check_functions() -> dict:
    from benchmarks.gpu import device, generation, pretrain, qlora, reward, zero3

    return {
        "device": device.run,
        "pretrain_throughput": pretrain.run,
        "qlora_memory": qlora.run,
        "zero3_sft": zero3.run,
        "listwise_reward": reward.run,
        "generation": generation.run,
    }


def run_check(name: str, fn, ctx) -> dict:
    from benchmarks.gpu.common import reset_memory, result

    start = time.perf_counter()
    try:
        record = fn(ctx)
    except Exception as exc:  # a failed check is a result, the suite goes on with the next one
        traceback.print_exc(file=sys.stderr)
        record = result(name, ctx, "failed", reason=f"{type(exc).__name__}: {str(exc)[:1500]}")
    record["seconds"] = round(time.perf_counter() - start, 2)
    if record["status"] == "failed" and not record.get("reason"):
        failed = {k: p.get("reason") for k, p in parts_of(record).items() if p.get("status") == "failed"}
        record["reason"] = "; ".join(f"{k}: {why}" for k, why in failed.items()) or None
    problems = validate(record)
    if problems:
        record = {**record, "status": "failed", "reason": "results schema: " + "; ".join(problems)}
    reset_memory()
    return record


def json_stdout():
    """A stream on the real stdout for the JSON lines; fd 1 itself then points at stderr.

    Libraries print to stdout (the Trainer's log dicts, DeepSpeed's logger, launched recipes), so stdout
    would no longer be one JSON line per check: everything else goes to stderr, at the descriptor level.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = json_stdout()
    try:
        how = ensure_packages()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from benchmarks.gpu.common import Context, environment

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run for the CPU dry run", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    env = {**environment(), "packages": how}
    print(json_line({"environment": env}), file=out, flush=True)
    records = []
    functions = check_functions()
    with tempfile.TemporaryDirectory(prefix="chimed-gpu-") as workdir:
        ctx = Context(dry_run=args.dry_run, workdir=Path(workdir), deepspeed_on_cpu=args.deepspeed_on_cpu)
        for name in args.only or CHECKS:
            record = run_check(name, functions[name], ctx)
            records.append(record)
            print(json_line(record), file=out, flush=True)
    results_dir = args.results or (None if args.dry_run else DEFAULT_RESULTS)
    if results_dir is not None:
        path = write(results_dir, records, env)
        print(f"figures written to {path}", file=sys.stderr)
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
