"""``make demo``: the regime end to end on the embedded tiny model, offline, in a few minutes on CPU.

Builds the tiny model, runs continued pre-training then SFT (from the pre-trained weights) with the
``recipes/tiny`` configs, and writes ``report.md`` (stage, steps, loss first -> last, tokens,
packing efficiency, wall time) under ``--output_dir``. Re-running starts the demo afresh.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from trl import SFTConfig, TrlParser

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.runs import write_atomic, write_json
from chimed_trl.stages import train_lm
from chimed_trl.tiny import ensure_tiny

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"


def run_stage(config: Path, output_dir: Path, model_path: Path) -> dict:
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    args = ["--config", str(config), "--output_dir", str(output_dir), "--model_name_or_path", str(model_path)]
    script_args, training_args, model_args = parser.parse_args_and_config(args)
    return train_lm(script_args, training_args, model_args)


def render_report(rows: list[dict], total_s: float) -> str:
    lines = [
        "# chimed-trl demo (tiny model, CPU, offline)",
        "",
        "| stage | steps | loss first -> last | tokens | packing efficiency | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for m in rows:
        packing = m["packing"]["efficiency"] if m.get("packing") else "n/a (not packed)"
        lines.append(
            f"| {m['stage']} | {m['steps']} | {m['loss_first']:.3f} -> {m['loss_last']:.3f} | {m['tokens']} "
            f"| {packing} | {m['wall_time_s']:.1f} |"
        )
    lines += [
        "",
        f"Total wall time: {total_s:.1f} s. Per-stage metrics: `*/metrics.json`; data counts: `*/data_stats.json`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.output_dir)
    start = time.time()
    for stage in ("pretrain", "sft"):
        shutil.rmtree(out / stage, ignore_errors=True)
    model = ensure_tiny(out / "tiny-model")
    pretrain = run_stage(RECIPES / "pretrain.yaml", out / "pretrain", model)
    sft = run_stage(RECIPES / "sft.yaml", out / "sft", out / "pretrain")
    total = time.time() - start
    write_json(out / "metrics.json", {"stages": [pretrain, sft], "wall_time_s": round(total, 2)})
    report = write_atomic(out / "report.md", render_report([pretrain, sft], total))
    print(report)
    return report


if __name__ == "__main__":
    main()
