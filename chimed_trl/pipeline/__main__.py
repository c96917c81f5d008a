"""``python -m chimed_trl.pipeline --config PIPELINE.yaml``: see :mod:`chimed_trl.pipeline.runner`."""

from chimed_trl.pipeline.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
