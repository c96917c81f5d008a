"""The install step for the GPU machine, which has no network: carried wheels, ``pip install --no-index``.

``benchmarks/gpu/wheels.sh`` fills ``.whl/`` on a machine with a registry; the folder travels with the
working tree. Here, when ``trl`` is not importable, everything in ``.whl/`` is installed with
``--no-index --no-deps`` into ``.gpu-site/`` (ignored; a folder this suite owns), which is then put
first on ``sys.path`` and on ``PYTHONPATH`` for the processes the suite launches.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu.common import REPO, importable
from chimed_trl.errors import UserError

WHEELS = REPO / ".whl"
SITE = REPO / ".gpu-site"


def activate(site: Path = SITE) -> None:
    """Make an earlier install visible to this process and to the processes it starts."""
    if not site.is_dir():
        return
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
    paths = [str(site), str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def install_command(wheels: list[Path], site: Path) -> list[str]:
    # --no-build-isolation: the deepspeed source archive builds against the image's torch and setuptools
    # (an isolated build would need an index to fetch them).
    return [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
            "--upgrade", "--target", str(site), *map(str, wheels)]  # fmt: skip


def ensure_packages(probe: str = "trl", wheel_dir: Path = WHEELS, site: Path = SITE) -> str:
    """Return how ``probe`` became importable: "present", "installed" (from ``wheel_dir``); raise if it cannot."""
    activate(site)
    if importable(probe):
        return "present"
    wheels = sorted(p for p in wheel_dir.glob("*") if p.suffix == ".whl" or p.name.endswith(".tar.gz"))
    if not wheels:
        raise UserError(
            f"{probe} is not importable and {wheel_dir} holds no wheels: run `bash benchmarks/gpu/wheels.sh` on a "
            "machine with PyPI access and carry .whl/ with the working tree"
        )
    # DS_BUILD_OPS=0: deepspeed compiles its CUDA ops when first used, not at install
    env = {**os.environ, "DS_BUILD_OPS": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(install_command(wheels, site), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise UserError(f"pip install from {wheel_dir} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    activate(site)
    if not importable(probe):
        raise UserError(f"{probe} is still not importable after installing {len(wheels)} files from {wheel_dir}")
    return "installed"
