"""Run the arq worker so that it never sits alive but idle (arq #435, #498).

arq's worker loop dies with the first Redis error, and nothing restarts it: a worker embedded in a
process stays up doing nothing. Here every Redis command has a socket timeout (a silent network
partition raises instead of hanging), and on a Redis error we let the running cycles finish, wait
for Redis, and start a fresh arq worker within a second of its return; if Redis stays away longer
than TOKENWARDEN_REDIS_OUTAGE_SECONDS we exit non-zero so the process supervisor restarts us. The
Runtime (database pool, HTTP client, metrics server) lives across those restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from typing import Any

import redis.exceptions
from arq.connections import ArqRedis
from arq.worker import Worker

from jobs.refresh import refresh_timeout_seconds
from jobs.worker import lanes, outbox_crons, refresh_crons, shutdown, startup, worker_settings
from statemachine.services.settings import Settings

logger = logging.getLogger(__name__)

# WatchError too: redis-py raises it for a connection lost under WATCH, which arq's start_jobs catches only
# around its EXEC (a chaos run saw it end 3 workers during a Redis restart, each restarted by the supervisor).
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.WatchError,
    OSError,
    asyncio.TimeoutError,
)
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0
REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
REDIS_PROBE_SECONDS = 0.5


class _Stop:
    """Set by SIGTERM/SIGINT, whether the arq lanes run or we wait for Redis (arq's own handlers are off: they
    would stop only the lane that installed them)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)


def redis_pool(url: str) -> ArqRedis:
    """An arq Redis client whose every command times out instead of hanging on a dead connection."""
    pool: ArqRedis = ArqRedis.from_url(
        url, socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS
    )
    return pool


async def serve(settings: Settings, *, burst: bool = False) -> int:
    """Run until SIGTERM (0), the end of a burst (0), or Redis gone longer than allowed (1)."""
    if burst:  # one pass leaves no deferred jobs behind (a burst worker would wait for them): the scan times all
        settings = dataclasses.replace(settings, exact_timing_seconds=0.0)
    stop = _Stop()
    stop.install()
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        while not stop.event.is_set():
            try:
                await _run_worker(settings, ctx, stop, burst=burst)
                return 0
            except REDIS_ERRORS as err:
                logger.error("lost Redis; waiting for it to come back", extra={"error": type(err).__name__})
            stop.install()
            if not await _wait_for_redis(settings, stop):
                return 0 if stop.event.is_set() else _gave_up(settings)
        return 0
    finally:
        await shutdown(ctx)


def _gave_up(settings: Settings) -> int:
    logger.critical(
        "Redis did not come back; exiting so the process supervisor restarts the worker",
        extra={"waited_seconds": settings.redis_outage_seconds},
    )
    return 1


async def _run_worker(settings: Settings, ctx: dict[str, Any], stop: _Stop, *, burst: bool) -> None:
    pool = redis_pool(settings.redis_url)
    try:
        if not burst:
            await _run_arq(settings, ctx, pool, stop, burst=False)
            return
        # One pass: arq's burst mode never ends while crons keep enqueueing, so run each cron once instead,
        # the refresh side first, then the email side (which sends what the refreshes queued).
        for crons in (refresh_crons(settings), outbox_crons(settings)):
            for job in crons:
                await job.coroutine({**ctx, "redis": pool})
            await _run_arq(settings, ctx, pool, stop, burst=True)
            if stop.event.is_set():
                return
    finally:
        with contextlib.suppress(*REDIS_ERRORS, redis.exceptions.RedisError):
            await pool.aclose(close_connection_pool=True)


async def _run_arq(settings: Settings, ctx: dict[str, Any], pool: ArqRedis, stop: _Stop, *, burst: bool) -> None:
    options = {**worker_settings(settings), "on_startup": None, "on_shutdown": None, "ctx": ctx}
    del options["redis_settings"]
    if burst:
        options["cron_jobs"] = []
    workers = [Worker(**lane, redis_pool=pool, burst=burst, handle_signals=False) for lane in lanes(options)]
    running: asyncio.Future[Any] = asyncio.gather(*(lane.async_run() for lane in workers))
    stopped: asyncio.Future[Any] = asyncio.create_task(stop.event.wait())
    try:
        await asyncio.wait([running, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if stop.event.is_set():
            logger.info("worker stopped by signal")
            await _finish(workers, pool, settings.shutdown_grace_seconds, cancel_late=True)
        else:  # the end of a burst, or Redis lost: each cycle ends within its own timeout, committed or rolled back
            await _finish(workers, pool, refresh_timeout_seconds(settings), cancel_late=False)
    with contextlib.suppress(asyncio.CancelledError):  # a lane that _finish stopped; a Redis error is raised
        await running


async def _finish(workers: list[Worker], pool: ArqRedis, wait_seconds: float, *, cancel_late: bool) -> None:
    """Stop every lane picking jobs, let the running ones end for up to `wait_seconds`; a dead Redis is not an
    error here. On a signal, what is still running after the shutdown grace is cancelled (`cancel_late`): a
    cycle cut short rolls back whole."""
    for worker in workers:
        worker.allow_pick_jobs = False
        if worker.main_task is not None:
            worker.main_task.cancel()
    tasks = [task for worker in workers for task in worker.tasks.values() if not task.done()]
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=wait_seconds)
        if late and cancel_late:
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=REDIS_SOCKET_TIMEOUT_SECONDS)  # the rollbacks land before we exit
    for task in (task for worker in workers for task in worker.tasks.values()):
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a job that could not report to a dead Redis is not an error here
    with contextlib.suppress(*REDIS_ERRORS, redis.exceptions.RedisError):
        keys = [worker.health_check_key for worker in workers]
        await asyncio.wait_for(pool.delete(*keys), REDIS_SOCKET_TIMEOUT_SECONDS)


async def _wait_for_redis(settings: Settings, stop: _Stop) -> bool:
    """True once Redis answers a PING; False on stop, or when the outage outlasts the allowed time."""
    deadline = time.monotonic() + settings.redis_outage_seconds
    while time.monotonic() < deadline and not stop.event.is_set():
        probe = redis_pool(settings.redis_url)
        try:
            if await asyncio.wait_for(probe.ping(), REDIS_SOCKET_TIMEOUT_SECONDS):
                logger.warning("Redis is back; restarting the worker")
                return True
        except (*REDIS_ERRORS, redis.exceptions.RedisError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await probe.aclose(close_connection_pool=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.event.wait(), REDIS_PROBE_SECONDS)
    return False
