"""Deprecated: moved to :mod:`chimed_trl.modeling.merge`. Kept so ``python -m chimed_trl.merge`` and
``from chimed_trl.merge import merge_adapter`` keep working."""

from chimed_trl.modeling.merge import claim_output, main, merge_adapter  # noqa: F401

if __name__ == "__main__":
    main()
