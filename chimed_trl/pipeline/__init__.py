"""The pipeline: a YAML of stages (:mod:`.config`) run in order by :mod:`.runner`; ablations are pipelines.

python -m chimed_trl.pipeline --config recipes/tiny/pipeline.yaml [--output_dir runs/demo]
"""

from chimed_trl.pipeline.config import DONE_FILE, TINY, Pipeline, Stage, load_pipeline
from chimed_trl.pipeline.runner import (
    STATE_FILE,
    build_parser,
    check_files,
    claim_output_dir,
    display,
    executable,
    main,
    plan,
    run_pipeline,
    stage_command,
)

__all__ = [
    "DONE_FILE",
    "STATE_FILE",
    "TINY",
    "Pipeline",
    "Stage",
    "build_parser",
    "check_files",
    "claim_output_dir",
    "display",
    "executable",
    "load_pipeline",
    "main",
    "plan",
    "run_pipeline",
    "stage_command",
]
