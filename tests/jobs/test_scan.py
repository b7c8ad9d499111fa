"""Due-scan -> batch refresh jobs -> one refresh per mailbox, with a burst arq worker on real Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name
from arq.worker import Worker
from prometheus_client import REGISTRY
from sqlalchemy import text

from jobs.refresh import refresh_mailbox
from jobs.scan import REFRESH_QUEUE, refresh_batch_size, scan_due
from jobs.worker import cron_fields, worker_settings
from statemachine.services.runtime import Runtime
from tests.database import service_environment
from tests.jobs.support import (
    Sandbox,
    add_mailboxes,
    arq_pool,
    fetch,
    refresh_functions,
    sandbox_fixture,
    scalar,
    tokens,
    worker_ctx,
)

DUE, LATER = tokens(12, "due"), tokens(3, "later")


sandbox = sandbox_fixture(DUE + LATER)


@pytest.fixture
def env(database_url: str, redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    """The global `runtime` fixture's environment: Google's token endpoint is this module's sandbox."""
    return service_environment(  # 5 cycle slots: batches of 10, so 12 due mailboxes make two
        database_url, GOOGLE_TOKEN_URL=sandbox.token_url, REDIS_URL=redis_url, TOKENWARDEN_WORKER_MAX_JOBS="5"
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await arq_pool(redis_url)
    await pool.flushdb()
    try:
        yield pool
    finally:
        await pool.aclose()


async def drain(runtime: Runtime, redis: ArqRedis) -> None:
    """Run the refresh jobs queued now: the batches first, then the main queue (timed jobs the cycles queued)."""
    options = worker_settings(runtime.settings)
    for queue in (REFRESH_QUEUE, default_queue_name):
        worker = Worker(
            functions=refresh_functions(options),
            queue_name=queue,
            redis_pool=redis,
            ctx=worker_ctx(runtime),
            burst=True,
            poll_delay=0.01,
            handle_signals=False,
            keep_result=options["keep_result"],
        )
        await worker.main()


def successes() -> float:
    labels = {"provider": "google", "outcome": "success"}
    return REGISTRY.get_sample_value("tokenwarden_refresh_cycles_total", labels) or 0.0


async def test_each_due_mailbox_is_refreshed_once_and_a_second_scan_enqueues_nothing(runtime, redis, sandbox) -> None:
    due = await add_mailboxes(runtime, DUE)
    await add_mailboxes(runtime, LATER, due_in_seconds=3600)
    ctx = {"runtime": runtime, "redis": redis}
    first = await scan_due(ctx)
    assert first == {"claimed": len(DUE), "enqueued": len(DUE), "batches": 2}  # 12 claims, 5 slots: 10 and 2
    owners = dict(await fetch(runtime, "select id, lease_owner from mailboxes where id = any(:ids)", ids=due))
    queued = [(job.function, *job.args) for job in await redis.queued_jobs(queue_name=REFRESH_QUEUE)]
    assert sorted(len(claims) for _, claims in queued) == [2, refresh_batch_size(5)]
    assert {function for function, _ in queued} == {"refresh_batch"}
    assert sorted(claim for _, claims in queued for claim in claims) == [(i, str(owners[i])) for i in sorted(due)]
    assert await scan_due(ctx) == {"claimed": 0}  # the same window: the leases hold

    before = successes()
    await drain(runtime, redis)
    assert sandbox.requests_by_token() == dict.fromkeys(DUE, 1)
    assert successes() - before == len(DUE)
    assert await scalar(runtime, "select count(*) from mailboxes where lease_owner is not null") == 0
    assert await scan_due(ctx) == {"claimed": 0}  # refreshed: due again only shortly before expiry


async def test_a_claim_that_outlived_its_lease_is_claimed_again_under_the_same_job_id(runtime, redis, sandbox) -> None:
    await add_mailboxes(runtime, DUE)
    ctx = {"runtime": runtime, "redis": redis}
    await scan_due(ctx)
    jobs_before = sorted(job.job_id for job in await redis.queued_jobs(queue_name=REFRESH_QUEUE))
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("update mailboxes set lease_until = now() - interval '1 second'"))
    again = await scan_due(ctx)
    assert again == {"claimed": len(DUE), "reclaimed": len(DUE), "already_queued": len(DUE)}
    assert sorted(job.job_id for job in await redis.queued_jobs(queue_name=REFRESH_QUEUE)) == jobs_before
    await drain(runtime, redis)
    assert sandbox.requests_by_token() == dict.fromkeys(DUE, 1)


async def test_a_job_whose_claim_is_finished_or_taken_does_nothing(runtime, redis, sandbox) -> None:
    (mailbox_id,) = await add_mailboxes(runtime, DUE[:1])
    ctx = {"runtime": runtime, "redis": redis}
    await scan_due(ctx)
    ((owner,),) = await fetch(runtime, "select lease_owner from mailboxes")
    job_ctx = {**ctx, "job_id": "refresh:test", "job_try": 1}
    assert await refresh_mailbox(job_ctx, mailbox_id, str(owner)) == "refreshed"
    assert await refresh_mailbox(job_ctx, mailbox_id, str(owner)) == "skipped"  # arq ran it again
    assert await refresh_mailbox(job_ctx, mailbox_id, str(uuid.uuid4())) == "skipped"  # not its claim
    assert await refresh_mailbox(job_ctx, 424242, str(owner)) == "unknown"  # deleted meanwhile
    assert sandbox.requests_by_token() == {DUE[0]: 1}


@pytest.mark.parametrize(
    ("seconds", "fields"),
    [
        (1, {"second": set(range(60))}),
        (15, {"second": {0, 15, 30, 45}}),
        (45, {"second": {0, 45}}),
        (60, {"minute": set(range(60)), "second": 0}),
        (600, {"minute": {0, 10, 20, 30, 40, 50}, "second": 0}),
        (7200, {"minute": 0, "second": 0}),
    ],
)
def test_scan_interval_becomes_cron_fields(seconds: float, fields: dict) -> None:
    assert cron_fields(seconds) == fields
