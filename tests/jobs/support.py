"""Helpers for the worker's tests: a served sandbox provider, bulk mailboxes, arq workers in and out of process.

The token endpoint is the real local sandbox (web/sandbox/) served on 127.0.0.1, so the
code under test makes real HTTP requests and the sandbox counts them per refresh token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker
from sqlalchemy import text

from devkit.sandbox import create_sandbox_app, sandbox_state
from devkit.serving import RunningServer, serve_in_thread
from jobs.refresh import cycle_slots
from jobs.scan import REFRESH_BATCH_JOB, REFRESH_JOB
from jobs.timed import URGENT_QUEUE
from jobs.worker import lanes, refresh_crons, worker_settings
from statemachine.services import accounts
from statemachine.services.runtime import Runtime
from tests.database import CLIENT_ID, CLIENT_SECRET

OWNER = "owner@example.test"
TOKENWARDEN = Path(sys.executable).with_name("tokenwarden")


@dataclass
class Sandbox:
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def requests_by_token(self) -> dict[str, int]:
        counts: dict[str, int] = httpx.get(f"{self.url}/_sandbox/requests").json()["by_refresh_token"]
        return counts

    def fault(self, **body: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=body).raise_for_status()


@contextlib.contextmanager
def serve_sandbox(tokens: list[str]) -> Iterator[Sandbox]:
    """A sandbox that knows `tokens` (one account); each refresh token answers until a fault says otherwise."""
    app = create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    state = sandbox_state(app)
    account = state.add_account("box-owner@gmail.test")
    for token in tokens:
        state.add_grant(account.sub, refresh_token=token)
    with serve_in_thread(app) as server:
        yield Sandbox(server)


def sandbox_fixture(refresh_tokens: list[str]) -> Any:
    """A module's `sandbox` fixture: a served sandbox that knows `refresh_tokens`."""

    @pytest.fixture
    def sandbox() -> Iterator[Sandbox]:
        with serve_sandbox(refresh_tokens) as served:
            yield served

    return sandbox


def tokens(count: int, prefix: str = "tok") -> list[str]:
    return [f"1//{prefix}-{i:05d}-SECRET" for i in range(count)]


async def add_mailboxes(runtime: Runtime, refresh_tokens: list[str], *, due_in_seconds: float = 0.0) -> list[int]:
    """Connect one mailbox per token in one transaction, all due `due_in_seconds` from now."""
    now = datetime.now(UTC)
    async with runtime.sessionmaker() as session, session.begin():
        users = await accounts.user_ids(session, {OWNER}, create=True)
        ids = await accounts.reserve_ids(session, len(refresh_tokens))
        rows = []
        for mailbox_id, token in zip(ids, refresh_tokens, strict=True):
            mailbox = accounts.new_mailbox(
                user=OWNER, provider="google", address=f"box{mailbox_id}@gmail.test", refresh_token=token
            )
            policy = runtime.settings.policy
            row = accounts.row_values(mailbox, mailbox_id, users[OWNER], runtime.cipher, policy, now, 0)
            row["next_refresh_at"] = now + timedelta(seconds=due_in_seconds)
            rows.append(row)
        await accounts.insert_mailboxes(session, rows)
    return ids


async def fetch(runtime: Runtime, sql: str, **params: Any) -> list[Any]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(text(sql), params)).all())


async def scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    async with runtime.sessionmaker() as session:
        return await session.scalar(text(sql), params)


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


async def arq_pool(redis_url: str) -> ArqRedis:
    return await create_pool(RedisSettings.from_dsn(redis_url))


def refresh_functions(options: dict[str, Any]) -> list[Any]:
    """The worker's refresh jobs (batches from the scan, single ones from timed work), without the rest."""
    return [function for function in options["functions"] if function.name in (REFRESH_BATCH_JOB, REFRESH_JOB)]


def worker_ctx(runtime: Runtime) -> dict[str, Any]:
    """What the worker's startup puts in arq's ctx for the refresh jobs."""
    return {"runtime": runtime, "refresh_slots": cycle_slots(runtime.settings)}


@dataclass(frozen=True)
class Lanes:
    """A worker's arq lanes running on the test's loop (jobs/worker.py `lanes`)."""

    workers: list[Worker]

    @property
    def jobs_failed(self) -> int:
        return sum(worker.jobs_failed for worker in self.workers)

    def lane(self, queue: str) -> Worker:
        return next(worker for worker in self.workers if worker.queue_name == queue)


@contextlib.asynccontextmanager
async def running_lanes(
    runtime: Runtime, redis_url: str, *, urgent: bool = True, **options: Any
) -> AsyncIterator[Lanes]:
    """The real worker's lanes (the urgent one too, or not), from its settings with `options` in place of some
    (its crons, its functions...)."""
    settings = worker_settings(runtime.settings) | {"ctx": worker_ctx(runtime), **options}
    for unused in ("redis_settings", "on_startup", "on_shutdown"):
        del settings[unused]
    pool = await arq_pool(redis_url)
    chosen = [lane for lane in lanes(settings) if urgent or lane.get("queue_name") != URGENT_QUEUE]
    workers = [Worker(**lane, redis_pool=pool, handle_signals=False) for lane in chosen]
    tasks = [asyncio.create_task(worker.async_run()) for worker in workers]
    try:
        yield Lanes(workers)
    finally:
        for worker in workers:
            worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*tasks, *(t for worker in workers for t in worker.tasks.values()), return_exceptions=True)
        await pool.aclose()


def running_worker(runtime: Runtime, redis_url: str, *, poll_delay: float = 0.05) -> AbstractAsyncContextManager[Lanes]:
    """The real worker's refresh side (refresh jobs and their crons, no urgent lane, so no email delivery) on the
    test's loop."""
    functions = refresh_functions(worker_settings(runtime.settings))
    return running_lanes(runtime, redis_url, urgent=False, functions=functions,
                         cron_jobs=refresh_crons(runtime.settings), poll_delay=poll_delay)  # fmt: skip


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`tokenwarden worker` in its own process, logging JSON lines to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(TOKENWARDEN), "worker"],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
