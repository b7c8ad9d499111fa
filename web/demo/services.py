"""Starting and stopping the demo's servers, each one a context manager that stops what it started.

Why context managers on one exit stack: Ctrl-C, SIGTERM or a failed start unwinds the stack in
reverse order (worker, web app, mail catcher, sandbox, Redis, PostgreSQL), so no server outlives the
demo and none loses its dependencies while it is still stopping. The worker is a subprocess
(`tokenwarden worker`, as an operator runs it; web/ never imports jobs/), in its own process group so
a Ctrl-C reaches only the demo, and told by PR_SET_PDEATHSIG to die with it if the demo is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from starlette.types import ASGIApp

from statemachine.embedded import die_with_parent_hook
from web.demo.datadir import DemoError
from web.serving import RunningServer, serve_in_thread

WORKER_COMMAND = (sys.executable, "-m", "statemachine.cli", "worker")
WORKER_SETTLE_SECONDS = 1.0  # a worker with a bad environment exits within this
STOP_MARGIN_SECONDS = 10.0


class Progress:
    """`  starting PostgreSQL... ok (2.1 s)` lines, so a slow first start never looks stuck."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[Callable[[str], None]]:
        """Print `what...`, then `ok` with the time taken (and any detail the block adds), or `failed`."""
        print(f"  {what}...", end=" ", file=self.out, flush=True)
        started, details = time.monotonic(), []
        try:
            yield details.append
        except BaseException:
            print("failed", file=self.out, flush=True)
            raise
        extra = f", {', '.join(details)}" if details else ""
        print(f"ok ({time.monotonic() - started:.1f} s{extra})", file=self.out, flush=True)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Worker:
    """`tokenwarden worker` with its output in a log file; `check()` raises DemoError once it has died."""

    def __init__(self, env: Mapping[str, str], log: Path, grace_seconds: float) -> None:
        self.env, self.log, self.grace_seconds = dict(env), log, grace_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start from the main thread (PR_SET_PDEATHSIG follows the starting thread) and check it stays up."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                WORKER_COMMAND, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(), process_group=0,
            )  # fmt: skip
        time.sleep(WORKER_SETTLE_SECONDS)
        self.check()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"the worker exited with status {self.proc.returncode}; its log ends:\n{tail(self.log)}")

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


@contextlib.contextmanager
def running_worker(env: Mapping[str, str], log: Path, grace_seconds: float) -> Iterator[Worker]:
    worker = Worker(env, log, grace_seconds)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def served(app: ASGIApp, what: str, port: int = 0) -> Iterator[RunningServer]:
    """Serve `app` on 127.0.0.1 (uvicorn in a thread of this process); a port in use is one clear error."""
    try:
        server = serve_in_thread(app, port=port, startup_timeout=30)
    except OSError as err:
        raise DemoError(f"cannot listen on 127.0.0.1:{port} for {what} ({err.strerror}): pick another --port") from None
    except RuntimeError as err:
        raise DemoError(f"{what} did not start: {err}") from None
    with server:
        yield server


def worker_environment(settings_env: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment: ours (PATH, locale...) with the demo's settings on top."""
    return {**os.environ, **settings_env}
