"""Benchmark: the ops pages, the gauges, the due-claim and incident detection at 1,000,000 mailboxes.

Run: `.venv/bin/python -m tests.benchmarks.scale [--mailboxes 1000000]`. It starts its own embedded
PostgreSQL and Redis (deleted afterwards), generates the mailboxes in SQL (95 % healthy, the rest
failing or disconnected, due over the next hour) and the last 24 hours of refresh outcomes of a fleet
on 1-hour tokens (mailboxes rows per hour, about 24 M at 1 M mailboxes; 2 % transient failures), and
prints how long each took. It then runs the outcome rollup's catch-up once (what the `roll_up_outcomes`
cron does on its first run or after downtime) and prints its time. The rollup stops a minute short of
the newest outcomes, so the pages read one to two minutes of raw rows after it: the most the
every-minute cron leaves. Then it times, best of a few runs: GET /ops and GET /api/ops/summary through
the app (an operator signed in), one gauge refresh, one claim of 500 due mailboxes (rolled back), one
count of a provider's incident window (its last 10 minutes of outcomes), and PostgreSQL's CPU while two
worker processes' incident guards see 10 s of a full outage's onset beside 10 s of succeeding cycles
(committed), alternated three times, the medians printed. The baselines are measured in the same run:
GET /healthz through the same app, and a `SELECT 1` round trip. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import psutil
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import text

from devkit.embedded import start_embedded_postgres, start_embedded_redis
from statemachine.core.errors import Verdict
from statemachine.core.states import FailureKind
from statemachine.services.metrics import refresh_gauges_once
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store import counts, outcome_minutes
from statemachine.store.incidents import IncidentGuard, window_counts
from statemachine.store.migrations import migrate
from statemachine.store.scheduling import claim_due
from tests.benchmarks.figures import Figure, print_figures
from tests.web.support import ADMIN, SECRET_KEY, add_user, login_link, use_link
from web.app import create_app
from web.pages import WebContext
from web.signing import Signing

COMMAND = "python -m tests.benchmarks.scale"
RUNS = 5
TOKEN_SECONDS = 3600  # 1-hour tokens: every mailbox is refreshed once an hour
WINDOW_SECONDS = 600
CYCLES_PER_SECOND = 1_000_000 / TOKEN_SECONDS  # a full outage's onset at 1 M mailboxes: every cycle fails
ONSET_SECONDS = 10
ONSET_ROUNDS = 3  # each load this many times, the median printed
WORKERS = 2  # the deploy runs at least two worker processes, each with its own guard
GENERATE = """
insert into mailboxes (user_id, provider, address, state, is_active, failure_kind, refresh_token_ciphertext,
                       token_refresh_failed_at, next_refresh_at, created_at)
select :user_id, 'google', 'scale' || g || '@bench.test', s.state, s.state <> 'disconnected',
       case when s.state = 'healthy' then null else 'transient' end, '\\x00'::bytea,
       case when s.state = 'healthy' then null else now() - random() * interval '3 days' end,
       case when s.state = 'disconnected' then null else now() + random() * interval '1 hour' end,
       now() - random() * interval '90 days'
from generate_series(1, :count) g,
     lateral (select case when g % 100 < 95 then 'healthy' when g % 100 < 97 then 'retrying'
                          when g % 100 < 99 then 'degraded' else 'disconnected' end as state) s
"""
DAY_SECONDS = 24 * 3600
# Mailboxes rows per hour over the last day, each in its own slot of the day (so rows come in `at` order and
# the (provider, at) index grows at its right edge): the same density as random times, generated faster.
OUTCOMES = """
insert into refresh_outcomes (provider, mailbox_id, outcome, code, at)
select 'google', (random() * :count)::bigint + 1,
       case when g % 50 = 0 then 'transient' else 'success' end,
       case when g % 50 = 0 then 'http_503' end,
       now() - (:rows - g + random()) * make_interval(secs => :slot)
from generate_series(1, :rows) g
"""


async def best_ms(action: Callable[[], Awaitable[Any]]) -> float:
    await action()  # warm: plans cached, pages in memory
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


async def generate(rt: Runtime, count: int) -> datetime:
    """Generate the rows; return when the outcomes end (their transaction's start: `now()` in SQL)."""
    started = time.perf_counter()
    async with rt.sessionmaker() as session, session.begin():
        user_id = await session.scalar(text("insert into users (email) values ('scale@bench.test') returning id"))
        await session.execute(text(GENERATE), {"user_id": user_id, "count": count})
    await counts.fold(rt.sessionmaker)  # as the worker's cron does every scan interval
    print(f"scale: generated {count:,} mailboxes in {time.perf_counter() - started:.0f} s", flush=True)
    started, rows = time.perf_counter(), count * DAY_SECONDS // TOKEN_SECONDS
    async with rt.sessionmaker() as session, session.begin():
        await session.execute(text(OUTCOMES), {"count": count, "rows": rows, "slot": DAY_SECONDS / rows})
        newest: datetime = await session.scalar(text("select now()"))
    print(f"scale: generated {rows:,} outcomes (24 h) in {time.perf_counter() - started:.0f} s", flush=True)
    async with rt.sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        await session.execute(text("vacuum analyze"))
        # the onset's cycles commit: their CPU is the figure, not waiting for this box's disk to flush
        await session.execute(text("alter system set synchronous_commit = off"))
        await session.execute(text("select pg_reload_conf()"))
    return newest


async def catch_up(rt: Runtime, newest: datetime) -> None:
    """The rollup's first run, as the cron's, but a minute short of the newest outcome: the pages read the most raw
    rows the every-minute cron leaves (one to two minutes)."""
    started = time.perf_counter()
    done = await outcome_minutes.roll_up(rt.sessionmaker, newest - timedelta(minutes=1))
    took = time.perf_counter() - started
    longest = (outcome_minutes.CHUNK + outcome_minutes.MARGIN) // timedelta(minutes=1)
    print(f"scale: rolled up the outcomes in {took:.1f} s ({done.chunks} chunks of <= {longest} minutes)", flush=True)
    async with rt.sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        await session.execute(text("analyze refresh_outcome_minutes, refresh_outcome_rollup"))


async def in_rollback(rt: Runtime, work: Callable[[Any], Awaitable[Any]]) -> None:
    async with rt.sessionmaker() as session, session.begin():
        await work(session)
        await session.rollback()


async def page_figures(web: WebContext) -> list[Figure]:
    await add_user(web, ADMIN, admin=True)
    app = create_app(web.runtime.settings, context=web)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=web.base_url) as client:
        await use_link(client, await login_link(web, ADMIN))

        async def get(path: str) -> None:
            (await client.get(path)).raise_for_status()

        healthz = await best_ms(lambda: get("/healthz"))
        return [
            Figure("GET /ops", await best_ms(lambda: get("/ops")), "ms", "GET /healthz", healthz, COMMAND,
                   "<= 200 ms"),
            Figure("GET /api/ops/summary", await best_ms(lambda: get("/api/ops/summary")), "ms", "GET /healthz",
                   healthz, COMMAND, "<= 100 ms"),
        ]  # fmt: skip


async def store_figures(rt: Runtime) -> list[Figure]:
    now = datetime.now(UTC)

    async def select_one() -> None:
        async with rt.sessionmaker() as session:
            await session.execute(text("select 1"))

    floor = await best_ms(select_one)
    gauges = await best_ms(lambda: refresh_gauges_once(rt.sessionmaker, datetime.now(UTC), 5))
    claim = await best_ms(lambda: in_rollback(rt, lambda s: claim_due(s, now + timedelta(minutes=30), 500, 60)))
    since = now - timedelta(seconds=WINDOW_SECONDS)
    window = await best_ms(lambda: in_rollback(rt, lambda s: window_counts(s, "google", since)))
    loads: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ONSET_ROUNDS):  # alternated: a busy moment of the box hits both alike
        for failing_now in (False, True):
            verdict = Verdict(FailureKind.TRANSIENT, "http_503", "bench") if failing_now else None
            loads[failing_now].append(await guard_load(rt, verdict))
    succeeding, failing = statistics.median(loads[False]), statistics.median(loads[True])
    return [
        Figure("gauge refresh (each worker, every 15 s)", gauges, "ms", "select 1", floor, COMMAND),
        Figure("claim 500 due mailboxes", claim, "ms", "select 1", floor, COMMAND),
        Figure("count one provider's incident window", window, "ms", "select 1", floor, COMMAND),
        Figure(f"outage onset: PG CPU, {CYCLES_PER_SECOND:.0f} failing/s, {WORKERS} workers", failing * 100, "%",
               f"{CYCLES_PER_SECOND:.0f} succeeding/s", succeeding * 100, COMMAND, "<= +5 %"),
    ]  # fmt: skip


def postmaster(database_url: str) -> psutil.Process:
    """The server started on the URL's socket folder (other PostgreSQL servers may run on the box)."""
    folder = unquote(database_url.rpartition("host=")[2])
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and folder in (process.info["cmdline"] or []):
            return process
    raise RuntimeError(f"no PostgreSQL server on {folder}")


def postgres_cpu(server: psutil.Process) -> dict[int, float]:
    """CPU seconds of the server and each of its processes (a backend per connection), by pid."""
    seconds = {}
    for process in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            seconds[process.pid] = sum(process.cpu_times()[:2])
    return seconds


async def guard_load(rt: Runtime, verdict: Verdict | None) -> float:
    """PostgreSQL's CPU (in cores) while WORKERS processes' guards see CYCLES_PER_SECOND cycles with `verdict`.

    The cycles take turns between fresh guards, as worker processes at the onset of an outage would; each
    cycle's outcome is committed in its own transaction (a claim to count the window commits with its
    cycle), and the rows added are deleted afterwards so the generated window stays as it is.
    """
    guards = [IncidentGuard(rt.settings.incidents) for _ in range(WORKERS)]
    at = datetime.now(UTC)

    async def cycle(index: int) -> None:
        async with rt.sessionmaker() as session, session.begin():
            guard = guards[index % WORKERS]
            await guard.observe(session, provider="google", mailbox_id=index + 1, verdict=verdict, at=at)

    assert rt.settings.database_url is not None
    server = postmaster(rt.settings.database_url)
    await asyncio.gather(*(cycle(0) for _ in range(20)))  # the pool's connections are open before measuring
    started, cpu = time.monotonic(), postgres_cpu(server)
    tasks = []
    for index in range(int(CYCLES_PER_SECOND * ONSET_SECONDS)):
        await asyncio.sleep(max(0.0, started + index / CYCLES_PER_SECOND - time.monotonic()))
        tasks.append(asyncio.create_task(cycle(index)))
    await asyncio.gather(*tasks)
    wall = time.monotonic() - started
    load = sum(seconds - cpu.get(pid, 0.0) for pid, seconds in postgres_cpu(server).items()) / wall
    async with rt.sessionmaker() as session, session.begin():
        await session.execute(text("delete from refresh_outcomes where at = :at"), {"at": at})
    return load


async def measure(env: dict[str, str], count: int) -> list[Figure]:
    assert env["DATABASE_URL"]
    await migrate(env["DATABASE_URL"])
    settings = load_settings(env)
    async with open_runtime(settings) as rt:
        await catch_up(rt, await generate(rt, count))
        redis = Redis.from_url(settings.redis_url)
        try:
            return await page_figures(WebContext(rt, redis, Signing(SECRET_KEY))) + await store_figures(rt)
        finally:
            await redis.aclose()


def figures(count: int = 1_000_000) -> list[Figure]:
    with start_embedded_postgres() as db, start_embedded_redis() as redis:
        env = {"DATABASE_URL": db, "REDIS_URL": redis, "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
               "TOKENWARDEN_SECRET_KEY": SECRET_KEY, "GOOGLE_CLIENT_ID": "bench", "GOOGLE_CLIENT_SECRET": "bench",
               "TOKENWARDEN_BASE_URL": "http://tokenwarden.test"}  # fmt: skip
        return asyncio.run(measure(env, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    print_figures(figures(parser.parse_args().mailboxes))


if __name__ == "__main__":
    main()
