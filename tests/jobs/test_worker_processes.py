"""`tokenwarden worker` processes against the served sandbox: several workers, crashes, Redis flushed, SIGTERM.

Every worker here is a real subprocess with the service's environment; each is killed in `finally`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from tests.database import CLIENT_SECRET, TEST_KEY, service_environment
from tests.jobs.support import (
    TOKENWARDEN,
    Sandbox,
    add_mailboxes,
    fetch,
    scalar,
    serve_sandbox,
    start_worker,
    stop,
    tokens,
    wait_until,
)

pytestmark = pytest.mark.slow

MANY = tokens(520, "many")
REVOKED = tokens(4, "revoked")  # unknown to the sandbox: invalid_grant
OUTCOMES = {"refreshed", "failed", "skipped", "stale", "unknown", "raised"}  # the outcome fields of a job line


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with serve_sandbox(MANY) as served:
        yield served


@pytest.fixture
def worker_env(database_url: str, redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    return service_environment(
        database_url,
        GOOGLE_TOKEN_URL=sandbox.token_url,
        REDIS_URL=redis_url,
        TOKENWARDEN_SCAN_INTERVAL_SECONDS="1",
        TOKENWARDEN_METRICS_PORT="0",
        TOKENWARDEN_CONFIRM_PERMANENT_SECONDS="0",  # the first invalid_grant disconnects (and emails)
        TOKENWARDEN_INCIDENT_MIN_MAILBOXES="1000",  # a handful of revoked tokens is not an incident
        TOKENWARDEN_LOG_LEVEL="INFO",
    )


@pytest.fixture
async def runtime(worker_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    async with open_runtime(load_settings(worker_env)) as rt:
        yield rt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def refreshed(runtime: Runtime) -> int:
    return int(await scalar(runtime, "select count(*) from mailboxes where last_refreshed_at is not null"))


async def settled(runtime: Runtime, count: int) -> bool:
    """Every mailbox's cycle applied: refreshed, or disconnected by its revoked token."""
    done = "last_refreshed_at is not null or state = 'disconnected'"
    return await scalar(runtime, f"select count(*) from mailboxes where {done}") == count


async def assert_no_duplicate_effects(runtime: Runtime) -> None:
    per_mailbox = "select mailbox_id, count(*) from {} group by mailbox_id having count(*) > 1"
    assert await fetch(runtime, per_mailbox.format("mailbox_state_transitions")) == []
    assert await fetch(runtime, per_mailbox.format("notifications")) == []


def lines_of(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def logged(log: Path, message: str) -> list[dict]:
    return [line for line in lines_of(log) if line["message"] == message]


def errors(*logs: Path) -> list[str]:
    return [line["message"] for log in logs for line in lines_of(log) if line["level"] in ("ERROR", "CRITICAL")]


async def test_two_workers_refresh_each_of_520_mailboxes_exactly_once(runtime, worker_env, sandbox, tmp_path) -> None:
    await add_mailboxes(runtime, MANY)
    port = free_port()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [
        start_worker({**worker_env, "TOKENWARDEN_METRICS_PORT": str(port)}, logs[0]),
        start_worker(worker_env, logs[1]),
    ]
    try:
        await wait_until(lambda: settled(runtime, len(MANY)), 60, "every mailbox refreshed")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        for proc in procs:
            stop(proc, signal.SIGTERM)
    assert [proc.returncode for proc in procs] == [0, 0]
    assert sandbox.requests_by_token() == dict.fromkeys(MANY, 1)
    jobs = [logged(log, "refresh job") for log in logs]
    refreshed = [mailbox_id for lines in jobs for line in lines for mailbox_id in line.get("refreshed", [])]
    assert sorted(refreshed) == sorted(set(refreshed)), "each mailbox in one job line"
    assert len(refreshed) == len(MANY)
    assert all(jobs), "both workers took part"
    assert all(
        line["job_id"].startswith("refresh-batch:") and set(line) & OUTCOMES == {"refreshed"} for line in jobs[0]
    )
    assert not [line for log in logs for line in logged(log, "refresh cycle")], "a routine refresh's own line is DEBUG"
    assert 'tokenwarden_refresh_cycles_total{outcome="success",provider="google"}' in metrics
    assert "tokenwarden_mailboxes{" in metrics
    texts = [log.read_text() for log in logs]  # no refresh token (1//many-00001-SECRET...), client secret or key
    assert not [secret for secret in ("-SECRET", CLIENT_SECRET, TEST_KEY) for text in texts if secret in text]
    assert errors(*logs) == []


async def test_a_killed_worker_leaves_nothing_behind(runtime, worker_env, sandbox, tmp_path) -> None:
    await add_mailboxes(runtime, MANY[:300] + REVOKED)
    env = {**worker_env, "TOKENWARDEN_LEASE_SECONDS": "3", "TOKENWARDEN_WORKER_MAX_JOBS": "4"}
    first = start_worker(env, tmp_path / "first.log")
    try:
        await wait_until(lambda: _at_least(runtime, 40), 30, "the first worker to get going")
        stop(first, signal.SIGKILL)
        done_at_kill = await refreshed(runtime)
        assert done_at_kill < 300, "killed in the middle of the run"
        second = start_worker(env, tmp_path / "second.log")
        try:
            await wait_until(lambda: settled(runtime, 304), 60, "the second worker to finish the run")
        finally:
            stop(second, signal.SIGTERM)
    finally:
        stop(first)
    counts = sandbox.requests_by_token()
    assert all(counts.get(token, 0) >= 1 for token in MANY[:300])
    assert sum(counts.get(token, 0) for token in MANY[:300]) <= 300 + 4  # at most the cycles in flight at the kill
    await assert_no_duplicate_effects(runtime)
    assert await scalar(runtime, "select count(*) from notifications") == len(REVOKED)
    assert errors(tmp_path / "second.log") == []


async def _at_least(runtime: Runtime, count: int) -> bool:
    return await refreshed(runtime) >= count


async def test_redis_flushed_mid_run_forgets_nothing(runtime, worker_env, sandbox, redis_url, tmp_path) -> None:
    await add_mailboxes(runtime, MANY[:300])
    env = {**worker_env, "TOKENWARDEN_LEASE_SECONDS": "2", "TOKENWARDEN_WORKER_MAX_JOBS": "2"}
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        await wait_until(lambda: _at_least(runtime, 20), 30, "the worker to get going")
        client = aioredis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        assert await refreshed(runtime) < 300, "flushed in the middle of the run"
        await wait_until(lambda: settled(runtime, 300), 60, "every mailbox refreshed after the flush")
    finally:
        stop(proc, signal.SIGTERM)
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:300], 1)
    await assert_no_duplicate_effects(runtime)


async def test_sigterm_abandons_a_stalled_cycle_without_applying_half_of_it(runtime, worker_env, sandbox, tmp_path):
    (mailbox_id,) = await add_mailboxes(runtime, MANY[:1])
    sandbox.fault(refresh_token=MANY[0], mode="timeout", seconds=30)  # the provider hangs
    env = {**worker_env, "TOKENWARDEN_SHUTDOWN_GRACE_SECONDS": "1", "TOKENWARDEN_HTTP_TIMEOUT_SECONDS": "20"}
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        await wait_until(lambda: _requested(sandbox), 20, "the cycle to call the provider")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop(proc)
    ((state, attempts, refreshed_at),) = await fetch(
        runtime,
        "select state, token_refresh_attempt_count, last_refreshed_at from mailboxes where id = :id",
        id=mailbox_id,
    )
    assert (state, attempts, refreshed_at) == ("healthy", 0, None)
    assert await scalar(runtime, "select count(*) from mailbox_state_transitions") == 0
    assert await scalar(runtime, "select count(*) from refresh_outcomes") == 0


async def _requested(sandbox: Sandbox) -> bool:
    return bool(sandbox.requests_by_token())


def test_worker_refuses_to_start_without_a_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [TOKENWARDEN, "worker"], env={"PATH": str(Path(sys.executable).parent)}, capture_output=True
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("tokenwarden: error: DATABASE_URL is not set\n")


def test_a_taken_metrics_port_is_named_with_its_setting(worker_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the metrics server listens on every address
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **worker_env, "TOKENWARDEN_METRICS_PORT": str(port)}
        result = subprocess.run([TOKENWARDEN, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    # the last line (before it, the start's warnings about what is unsafe for production)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tokenwarden: error: TOKENWARDEN_METRICS_PORT: port {port} cannot be opened (")
    assert "Traceback" not in result.stderr


async def test_a_burst_worker_refreshes_what_is_due_and_exits(runtime, worker_env, sandbox, tmp_path) -> None:
    await add_mailboxes(runtime, MANY[:5])
    await add_mailboxes(runtime, MANY[5:7], due_in_seconds=3600)
    result = await asyncio.to_thread(
        subprocess.run, [TOKENWARDEN, "worker", "--burst"], env={**os.environ, **worker_env}, capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:5], 1)
