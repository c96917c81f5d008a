"""GPU validation suite: one command on a lent GPU, a CPU dry run in the test-suite.

On the GPU machine (no network), from the repository root with ``.whl/`` carried::

    python3 -m benchmarks.gpu                       # every check; figures to benchmarks/gpu/RESULTS.md
    python3 -m benchmarks.gpu --only qlora_memory   # one check (results accumulate across runs)

``.whl/`` is filled once, on a machine with PyPI access, by ``bash benchmarks/gpu/wheels.sh``.
On CPU: ``python -m benchmarks.gpu --dry-run`` builds each check's model config and data at tiny
shapes and runs one optimizer step through the same code path (``tests/benchmarks/test_gpu_dry_run.py``).
"""
