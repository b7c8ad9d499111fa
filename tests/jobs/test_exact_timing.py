"""Exact timing: a revoked grant's confirming cycle runs at its due moment, not at the next due-scan, and
its email is delivered at once, also while a transient provider incident is open (issue 14).

The worker is the real arq configuration (every job, the refresh crons) on real Redis and PostgreSQL,
with the sandbox Google over HTTP and a real SMTP server. The scan runs once a minute, and the outbox
sweep is left out, so only the deferred job and the hand-off at commit can be this quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import pytest
from arq.constants import in_progress_key_prefix

from jobs import timed
from jobs.refresh import refresh_mailbox
from jobs.scan import REFRESH_QUEUE, scan_due
from jobs.timed import URGENT_QUEUE
from jobs.upkeep import check_incidents
from jobs.worker import refresh_crons
from statemachine.services.cycle import run_cycle
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store.scheduling import timed_job_id
from tests.database import service_environment
from tests.jobs.support import (
    Lanes,
    Sandbox,
    add_mailboxes,
    fetch,
    running_lanes,
    serve_sandbox,
    tokens,
    wait_until,
)
from tests.jobs.test_scan import drain
from tests.smtp import SmtpServer, smtp_server_fixture  # noqa: F401

CONFIRM_SECONDS = 3.0
ON_TIME_SECONDS = 2.0  # "within a couple of seconds of its due moment"
DELIVERED_WITHIN_SECONDS = 5.0  # "seconds after the commit" (the sweep, left out here, would be the net)
REVOKED, FAILING = tokens(1, "revoked"), tokens(6, "failing")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with serve_sandbox(REVOKED + FAILING) as served:
        yield served


@pytest.fixture
async def runtime(
    database_url: str, redis_url: str, sandbox: Sandbox, smtp_server: SmtpServer
) -> AsyncIterator[Runtime]:
    env = service_environment(
        database_url,
        GOOGLE_TOKEN_URL=sandbox.token_url,
        REDIS_URL=redis_url,
        SMTP_URL=smtp_server.url(),
        TOKENWARDEN_SCAN_INTERVAL_SECONDS="60",
        TOKENWARDEN_CONFIRM_PERMANENT_SECONDS=str(CONFIRM_SECONDS),
        TOKENWARDEN_RETRY_TRIES="1",
        # without an incident, a failing mailbox would be degraded and emailed on its second failed cycle
        TOKENWARDEN_CYCLE_DELAYS_SECONDS="4",
        TOKENWARDEN_SMTP_RETRY_BASE_SECONDS="0",
    )
    async with open_runtime(load_settings(env)) as rt:
        yield rt


def worker(runtime: Runtime, redis_url: str) -> AbstractAsyncContextManager[Lanes]:
    """Every job of the real worker, its refresh crons (no outbox sweep) and all its lanes."""
    return running_lanes(runtime, redis_url, cron_jobs=refresh_crons(runtime.settings))


async def history(runtime: Runtime, mailbox_id: int) -> list[tuple[str, str, datetime]]:
    sql = "select event, to_state, at from mailbox_state_transitions where mailbox_id = :id order by id"
    return [tuple(row) for row in await fetch(runtime, sql, id=mailbox_id)]


async def disconnected(runtime: Runtime, mailbox_id: int) -> bool:
    return any(to_state == "disconnected" for _, to_state, _ in await history(runtime, mailbox_id))


async def assert_confirmed_on_time_and_told_at_once(runtime: Runtime, smtp: SmtpServer, mailbox_id: int) -> None:
    await wait_until(lambda: disconnected(runtime, mailbox_id), 20, "the confirming cycle")
    (_, _, first), (event, state, confirmed) = await history(runtime, mailbox_id)
    assert (event, state) == ("refresh_failed_permanent", "disconnected")
    due = first + timedelta(seconds=CONFIRM_SECONDS)
    assert due <= confirmed <= due + timedelta(seconds=ON_TIME_SECONDS)  # the scan would be up to 60 s late
    [message] = await smtp.wait_for(1, DELIVERED_WITHIN_SECONDS)
    assert datetime.now(UTC) - confirmed < timedelta(seconds=DELIVERED_WITHIN_SECONDS)
    assert message["Subject"] == f"Please reconnect your Gmail account box{mailbox_id}@gmail.test"


async def test_a_revoked_grant_is_confirmed_at_its_due_moment_and_emailed_at_once(
    runtime, arq_redis, redis_url, sandbox, smtp_server
) -> None:
    sandbox.fault(mode="revoke", refresh_token=REVOKED[0])
    (mailbox_id,) = await add_mailboxes(runtime, REVOKED)
    async with worker(runtime, redis_url):
        await assert_confirmed_on_time_and_told_at_once(runtime, smtp_server, mailbox_id)
    assert sandbox.requests_by_token() == {REVOKED[0]: 2}


async def test_during_a_transient_incident_a_revoked_grant_is_still_told_on_schedule(
    runtime, arq_redis, redis_url, sandbox, smtp_server
) -> None:
    for token in FAILING:
        sandbox.fault(mode="http_5xx", status=503, refresh_token=token)
    failing = await add_mailboxes(runtime, FAILING)
    async with worker(runtime, redis_url):
        opened = "select count(*) from incidents where status = 'open' and kind = 'transient'"
        await wait_until(lambda: _count(runtime, opened, 1), 15, "the outage's incident")
        sandbox.fault(mode="revoke", refresh_token=REVOKED[0])
        (revoked,) = await add_mailboxes(runtime, REVOKED)
        now = datetime.now(UTC)
        await timed.refresh_at(arq_redis, [(revoked, now)], 60, now)  # its first cycle now, not at the next scan
        await assert_confirmed_on_time_and_told_at_once(runtime, smtp_server, revoked)
        retried = "select count(*) from refresh_outcomes where mailbox_id = any(:ids)"
        await wait_until(lambda: _count(runtime, retried, 2 * len(FAILING), ids=failing), 20, "held-back retries")
    states = await fetch(runtime, "select distinct state from mailboxes where id = any(:ids)", ids=failing)
    assert states == [("retrying",)]  # frozen: without the incident, the second failure degrades them
    assert await fetch(runtime, "select mailbox_id from notifications") == [(revoked,)]
    assert len(smtp_server.messages) == 1


async def _count(runtime: Runtime, sql: str, at_least: int, **params: object) -> bool:
    ((count,),) = await fetch(runtime, sql, **params)
    return bool(count >= at_least)


@pytest.mark.parametrize("order", ["scan first", "timed job first", "at once"])
async def test_a_timed_job_and_a_scan_that_find_the_same_due_time_run_one_cycle(
    runtime, arq_redis, sandbox, order: str
) -> None:
    (mailbox_id,) = await add_mailboxes(runtime, REVOKED)
    ((due,),) = await fetch(runtime, "select next_refresh_at from mailboxes")
    await asyncio.sleep(0.01)  # due: now is past it
    ctx = {"runtime": runtime, "redis": arq_redis, "job_id": timed_job_id(mailbox_id, due), "job_try": 1}
    scan, job = scan_due(ctx), refresh_mailbox(ctx, mailbox_id, due)
    if order == "scan first":
        assert await scan == {"claimed": 1, "enqueued": 1, "batches": 1}
        assert await job == "refreshed"  # it takes the scan's claim over: no wait behind the scan's job
        await drain(runtime, arq_redis)  # the scan's job finds its claim taken
    elif order == "timed job first":
        assert await job == "refreshed"
        assert await scan == {"claimed": 0}  # refreshed: no longer due
    else:
        await asyncio.gather(scan, job)
        await drain(runtime, arq_redis)
    assert sandbox.requests_by_token() == {REVOKED[0]: 1}


async def test_a_scan_adds_no_job_for_a_due_time_that_a_timed_job_waits_for(runtime, arq_redis, sandbox) -> None:
    (mailbox_id,) = await add_mailboxes(runtime, REVOKED)
    ((due,),) = await fetch(runtime, "select next_refresh_at from mailboxes")
    assert await timed.refresh_at(arq_redis, [(mailbox_id, due)], 60, due) == 1
    assert await scan_due({"runtime": runtime, "redis": arq_redis}) == {"claimed": 1, "timed": 1}
    assert [job.job_id for job in await arq_redis.queued_jobs()] == [timed_job_id(mailbox_id, due)]
    assert await arq_redis.queued_jobs(queue_name=REFRESH_QUEUE) == []
    await drain(runtime, arq_redis)  # the timed job takes the scan's claim over
    assert sandbox.requests_by_token() == {REVOKED[0]: 1}
    assert await fetch(runtime, "select state, lease_owner from mailboxes") == [("healthy", None)]


async def test_a_timed_job_a_killed_worker_was_running_does_not_hold_its_due_time(runtime, arq_redis, sandbox) -> None:
    """arq keeps a killed worker's job in progress for minutes: the scan must not wait for it."""
    (mailbox_id,) = await add_mailboxes(runtime, REVOKED)
    ((due,),) = await fetch(runtime, "select next_refresh_at from mailboxes")
    job_id = timed_job_id(mailbox_id, due)
    await arq_redis.enqueue_job("refresh_mailbox", mailbox_id, due, _job_id=job_id, _queue_name="arq:queue:dead")
    await arq_redis.set(in_progress_key_prefix + job_id, b"1")
    assert await scan_due({"runtime": runtime, "redis": arq_redis}) == {"claimed": 1, "enqueued": 1, "batches": 1}
    await drain(runtime, arq_redis)
    assert sandbox.requests_by_token() == {REVOKED[0]: 1}


async def test_a_near_next_attempt_gets_a_job_deferred_to_its_moment_and_the_email_goes_at_once(
    runtime, arq_redis, sandbox
) -> None:
    sandbox.fault(mode="revoke", refresh_token=REVOKED[0])
    (mailbox_id,) = await add_mailboxes(runtime, REVOKED)
    ctx = {"runtime": runtime, "redis": arq_redis}
    ((first_due,),) = await fetch(runtime, "select next_refresh_at from mailboxes")
    assert await refresh_mailbox(ctx, mailbox_id, first_due) == "failed"
    ((due,),) = await fetch(runtime, "select next_refresh_at from mailboxes")
    [job] = await arq_redis.queued_jobs(queue_name=URGENT_QUEUE)  # the confirming cycle decides the user's notice
    assert (job.job_id, job.args) == (timed_job_id(mailbox_id, due), (mailbox_id, due))
    assert abs(job.score - due.timestamp() * 1000) <= 0.5  # deferred to the due moment (arq counts whole ms)
    assert await refresh_mailbox(ctx, mailbox_id, first_due) == "skipped"  # a stale copy: not due yet

    assert await refresh_mailbox(ctx, mailbox_id, due) == "failed"  # at its moment
    ((notification_id,),) = await fetch(runtime, "select id from notifications")
    queued = {job.job_id for job in await arq_redis.queued_jobs(queue_name=URGENT_QUEUE)}  # the one run by hand too
    assert queued == {timed_job_id(mailbox_id, due), f"deliver:{notification_id}:0"}  # the sweep's id


async def test_the_mailboxes_an_incident_held_are_retried_each_at_its_moment_when_it_closes(
    runtime, arq_redis, sandbox
) -> None:
    for token in FAILING[:5]:
        sandbox.fault(mode="http_5xx", status=503, refresh_token=token)
    held = await add_mailboxes(runtime, FAILING[:5])
    for mailbox_id in held:
        await run_cycle(runtime.cycle_deps(), mailbox_id, actor="worker")
    async with runtime.sessionmaker() as session, session.begin():  # other mailboxes refresh fine again
        for _ in range(6):
            await runtime.incidents.observe(
                session, provider="google", mailbox_id=0, verdict=None, at=datetime.now(UTC)
            )
    assert await check_incidents({"runtime": runtime, "redis": arq_redis}) == {"closed": 1, "timed": 5}
    due = dict(await fetch(runtime, "select id, next_refresh_at from mailboxes where id = any(:ids)", ids=held))
    queued = {job.job_id for job in await arq_redis.queued_jobs()}
    assert queued == {timed_job_id(mailbox_id, at) for mailbox_id, at in due.items()}
