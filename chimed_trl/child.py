"""``python -m chimed_trl.child CMD ...``: run a stage so that it dies with the pipeline that started it.

A stage is a process tree (``accelerate launch`` and its workers, a recipe and its data loaders). If the
pipeline is killed (SIGKILL, a closed terminal, a batch scheduler's time limit), a plain child would run on
as an orphan and a rerun would start a second run into the same folder. This small supervisor asks the
kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), runs the command in a process group of
its own, and on SIGTERM/SIGINT passes the signal to that whole group (then SIGKILL after a grace period),
so no process of the stage outlives the pipeline. It exits with the command's exit code.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
GRACE_S = 30  # a stage's own SIGTERM handling (accelerate, the trainer) gets this long before SIGKILL


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits; False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def supervise(command: list[str], parent: int) -> int:
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request above took effect
        return 128 + signal.SIGTERM
    proc = subprocess.Popen(command, start_new_session=True)

    def stop(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # Ctrl-C reaches us, not the stage's own group: pass it on
    return proc.wait()


def wrap(command: list[str]) -> list[str]:
    """``command`` run under this supervisor, with the current process as the parent it dies with."""
    return [sys.executable, "-m", "chimed_trl.child", str(os.getpid()), *command]


if __name__ == "__main__":
    raise SystemExit(supervise(sys.argv[2:], int(sys.argv[1])))
