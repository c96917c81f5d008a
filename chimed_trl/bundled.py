"""Files the package ships so it runs from any directory: sample data, the tiny recipes, accelerate configs.

A config names them the way a source checkout lays them out (``recipes/tiny/sft.yaml``,
``chimed_trl/data/samples/sft.jsonl``, ``accelerate_configs/cpu_2proc.yaml``), relative to the working
directory. :func:`bundled_path` keeps that meaning first: a path that exists where it is named is the
user's and is used as is. Only when it does not exist, and it names one of the shipped trees, does it
resolve to the package's copy: ``chimed_trl/...`` inside the installed package, ``recipes/`` and
``accelerate_configs/`` from ``chimed_trl/bundled/`` (copied there at build time by ``setup.py``) or, in a
source checkout or an editable install, from the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED_TREES = ("recipes", "accelerate_configs")  # top-level folders copied into chimed_trl/bundled/


def bundled_root(tree: str) -> Path:
    """Where a shipped top-level tree lives: the installed package's copy, else the source checkout's."""
    packaged = PACKAGE / "bundled" / tree
    return packaged if packaged.is_dir() else PACKAGE.parent / tree


def bundled_path(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists (or is absolute, or names no shipped tree); else the shipped copy."""
    given = Path(path)
    # a ".." would step out of the shipped tree (chimed_trl/../../x is then a file outside the package)
    if given.is_absolute() or given.exists() or not given.parts or ".." in given.parts:
        return given
    head = given.parts[0]
    if head == PACKAGE.name:
        shipped = PACKAGE.parent / given
    elif head in SHIPPED_TREES:
        shipped = bundled_root(head).joinpath(*given.parts[1:])
    else:
        return given
    return shipped if shipped.exists() else given
