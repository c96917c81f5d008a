"""``make demo``: the whole regime on the embedded tiny model, offline, on CPU, through the pipeline runner.

    python -m chimed_trl.demo [--output_dir runs/demo] [--from STAGE] [--dry-run] [--verbose]

is ``python -m chimed_trl.pipeline --config recipes/tiny/pipeline.yaml --output_dir runs/demo`` (tiny base ->
pre-training -> SFT -> augmentation -> listwise reward model -> rejection sampling -> evaluation), with the
report in ``<output_dir>/report.md``. A second run skips the finished stages.
"""

from __future__ import annotations

from chimed_trl import pipeline

TINY_PIPELINE = "recipes/tiny/pipeline.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = pipeline.build_parser(prog="python -m chimed_trl.demo", config=TINY_PIPELINE)
    parser.set_defaults(output_dir="runs/demo")
    return pipeline.main(argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
