"""The floors the pipeline is measured against: each one piece of a refresh, with no framework around it.

Each returns seconds of this thread's CPU per operation (`time.thread_time`, so a sandbox served
from another thread of the process is not counted), 20 operations in flight as the worker runs them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from arq import func
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker

IN_FLIGHT = 20


def box_cpu_seconds() -> float:
    """Every core's busy time (all but idle and iowait), whoever spent it."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def per_operation(count: int, operation: Callable[[int], Awaitable[object]]) -> float:
    """This thread's CPU per call of `operation(i)` for i in range(count), IN_FLIGHT at a time."""
    indexes = iter(range(count))

    async def lane() -> None:
        for index in indexes:
            await operation(index)

    started = time.thread_time()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return (time.thread_time() - started) / count


async def aiohttp_loop(token_url: str, refresh_tokens: list[str], client: dict[str, str]) -> float:
    """A token POST and its JSON answer, on one aiohttp session."""
    form = {"grant_type": "refresh_token", "client_id": client["GOOGLE_CLIENT_ID"],
            "client_secret": client["GOOGLE_CLIENT_SECRET"]}  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def refresh(index: int) -> None:
            data = {**form, "refresh_token": refresh_tokens[index % len(refresh_tokens)]}
            async with session.post(token_url, data=data) as response:
                await response.json()

        await per_operation(100, refresh)  # warm-up: the connection pool
        return await per_operation(len(refresh_tokens), refresh)


async def aiohttp_loop_apart(token_url: str, refresh_tokens: list[str], client: dict[str, str]) -> float:
    """`aiohttp_loop` in a process of its own, as a worker's cycles are: the floor for a worker process.

    Run in the process whose thread serves the endpoint, the loop shares the interpreter lock with the
    endpoint, and that contention inflated its CPU by about half (199 vs 129 µs per refresh, the median of
    4 runs each, alternated; the note of issue 12), which made the worker's ratio look better than it was.
    """
    asked = {"token_url": token_url, "refresh_tokens": refresh_tokens, "client": client}
    return float(await in_own_process("tests.benchmarks.floors", asked))


async def in_own_process(module: str, request: dict[str, Any]) -> bytes:
    """Run `python -m module` with `request` as JSON on its stdin; its stdout, once it exited cleanly."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=Path(__file__).parents[2],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await child.communicate(json.dumps(request).encode())
    if child.returncode:
        raise RuntimeError(f"python -m {module} exited with {child.returncode}")
    return out


async def sql_lock_update(database_url: str, count: int) -> float:
    """One transaction per mailbox: lock its row, update it, commit (the cycle's outcome, bare)."""
    pool = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), min_size=IN_FLIGHT, max_size=IN_FLIGHT)
    ids = [row[0] for row in await pool.fetch("select id from mailboxes order by id limit $1", count)]

    async def lock_update(index: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            mailbox_id = ids[index % len(ids)]
            await conn.execute("select 1 from mailboxes where id = $1 for update", mailbox_id)
            await conn.execute("update mailboxes set updated_at = now() where id = $1", mailbox_id)

    try:
        return await per_operation(count, lock_update)
    finally:
        await pool.close()


async def _noop(ctx: dict[str, Any]) -> None:
    """The job that does nothing: what arq itself costs per job."""


async def arq_noop_jobs(redis_url: str, count: int) -> float:
    """arq's worker-side CPU per job, enqueued beforehand, at most IN_FLIGHT at once."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        await pool.flushdb()  # the benchmark's own Redis: the workers' leftover cron jobs are not this worker's
        for index in range(count):
            await pool.enqueue_job("noop", _job_id=f"noop:{index}")
        worker = Worker(functions=[func(_noop, name="noop")], redis_pool=pool, burst=True, max_jobs=IN_FLIGHT,
                        handle_signals=False, poll_delay=0.01, keep_result=0)  # fmt: skip
        started = time.thread_time()
        await worker.async_run()
        return (time.thread_time() - started) / count
    finally:
        await pool.aclose()


if __name__ == "__main__":  # aiohttp_loop_apart's child: the request on stdin, seconds per refresh on stdout
    request = json.load(sys.stdin)
    print(asyncio.run(aiohttp_loop(request["token_url"], request["refresh_tokens"], request["client"])))
