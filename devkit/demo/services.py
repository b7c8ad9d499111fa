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
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from starlette.types import ASGIApp

from devkit.demo.datadir import DemoError
from devkit.serving import RunningServer, serve_in_thread
from devkit.worker_process import WorkerExitedError, WorkerProcess

WORKER_SETTLE_SECONDS = 1.0  # a worker with a bad environment exits within this


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
        started, details = time.monotonic(), list[str]()
        try:
            yield details.append
        except BaseException:
            print("failed", file=self.out, flush=True)
            raise
        extra = f", {', '.join(details)}" if details else ""
        print(f"ok ({time.monotonic() - started:.1f} s{extra})", file=self.out, flush=True)


@contextlib.contextmanager
def running_worker(env: Mapping[str, str], log: Path, grace_seconds: float) -> Iterator[WorkerProcess]:
    """The worker, started from the main thread and checked to stay up; a worker that dies is a DemoError."""
    worker = WorkerProcess(env, log, grace_seconds)
    try:
        try:
            worker.start(settle_seconds=WORKER_SETTLE_SECONDS)
        except WorkerExitedError as err:
            raise DemoError(str(err)) from None
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
