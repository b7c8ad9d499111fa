"""`tokenwarden worker` as a child process, for the demo and the simulator (web/ never imports jobs/).

The child runs in its own process group (a Ctrl-C in the terminal reaches only the parent, which
stops it in order) and is told by PR_SET_PDEATHSIG to die with the parent if that is killed, so no
worker is orphaned. Start it from the main thread: the death signal follows the starting thread.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from devkit.embedded import die_with_parent_hook

WORKER_COMMAND = (sys.executable, "-m", "statemachine.cli.main", "worker")
STOP_MARGIN_SECONDS = 10.0


class WorkerExitedError(RuntimeError):
    """The worker process ended on its own; the message carries the end of its log."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class WorkerProcess:
    """One worker with its output in a log file; `check()` raises WorkerExitedError once it has died."""

    def __init__(self, env: Mapping[str, str], log: Path, grace_seconds: float) -> None:
        self.env, self.log, self.grace_seconds = dict(env), log, grace_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, settle_seconds: float = 0.0) -> None:
        """Start it; with `settle_seconds`, wait that long and fail if it already died (a bad environment)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                WORKER_COMMAND, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(), process_group=0,
            )  # fmt: skip
        if settle_seconds:
            time.sleep(settle_seconds)
            self.check()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise WorkerExitedError(
                f"the worker exited with status {self.proc.returncode}; its log ends:\n{tail(self.log)}"
            )

    def stop(self) -> None:
        """SIGTERM (running cycles finish within the grace), SIGKILL if it outstays it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.grace_seconds + STOP_MARGIN_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None
