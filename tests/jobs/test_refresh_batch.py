"""One arq job per batch of due mailboxes: each claim refreshed once, whatever runs twice or fails beside it.

Real PostgreSQL and Redis, the sandbox Google over HTTP (it counts requests per refresh token).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest
from arq.connections import ArqRedis

import jobs.refresh
from jobs import timed
from jobs.refresh import refresh_batch, refresh_mailbox, refresh_timeout_seconds
from jobs.scan import REFRESH_QUEUE, refresh_batch_size, scan_due
from jobs.worker import batch_jobs_in_flight, batch_timeout_seconds, worker_settings
from statemachine.services.cycle import CycleResult
from statemachine.services.runtime import Runtime, pool_size_for
from statemachine.services.settings import load_settings
from tests.database import service_environment
from tests.jobs.support import (
    Sandbox,
    add_mailboxes,
    fetch,
    running_worker,
    sandbox_fixture,
    scalar,
    tokens,
    worker_ctx,
)
from tests.jobs.test_scan import drain

MANY = tokens(23, "batch")
STALL_SECONDS = 0.4  # each token request of the concurrency tests hangs this long, then succeeds


sandbox = sandbox_fixture(MANY)


@pytest.fixture
def overrides() -> dict[str, str]:
    return {}


@pytest.fixture
def env(database_url: str, redis_url: str, sandbox: Sandbox, overrides: dict[str, str]) -> dict[str, str]:
    """The global `runtime` fixture's environment: Google's token endpoint is this module's sandbox."""
    return service_environment(database_url, GOOGLE_TOKEN_URL=sandbox.token_url, REDIS_URL=redis_url, **overrides)


async def scanned(runtime: Runtime, redis: ArqRedis, refresh_tokens: list[str]) -> list[list[tuple[int, str]]]:
    """Connect a due mailbox per token and scan: the claims of each batch job the scan enqueued."""
    await add_mailboxes(runtime, refresh_tokens)
    await scan_due({"runtime": runtime, "redis": redis})
    return [job.args[0] for job in await redis.queued_jobs(queue_name=REFRESH_QUEUE)]


def job_ctx(runtime: Runtime, redis: ArqRedis, **extra: Any) -> dict[str, Any]:
    return {**worker_ctx(runtime), "redis": redis, "job_id": "refresh-batch:test", "job_try": 1, **extra}


async def test_a_scan_of_n_due_mailboxes_enqueues_ceil_n_over_size_batches_and_refreshes_each_once(
    runtime, arq_redis, sandbox
) -> None:
    ids = await add_mailboxes(runtime, MANY)
    batches = math.ceil(len(MANY) / refresh_batch_size(runtime.settings.worker_max_jobs))
    totals = await scan_due({"runtime": runtime, "redis": arq_redis})
    assert totals == {"claimed": len(MANY), "enqueued": len(MANY), "batches": batches}
    queued = await arq_redis.queued_jobs(queue_name=REFRESH_QUEUE)
    assert len(queued) == batches
    assert all(job.job_id.startswith("refresh-batch:") for job in queued)
    assert sorted(mailbox_id for job in queued for mailbox_id, _ in job.args[0]) == sorted(ids)
    await drain(runtime, arq_redis)
    assert sandbox.requests_by_token() == dict.fromkeys(MANY, 1)
    assert await fetch(runtime, "select distinct state, lease_owner from mailboxes") == [("healthy", None)]


async def test_a_batch_run_twice_refreshes_nothing_twice(runtime, arq_redis, sandbox) -> None:
    [claims] = await scanned(runtime, arq_redis, MANY[:5])
    ctx = job_ctx(runtime, arq_redis)
    assert await refresh_batch(ctx, claims) == {"refreshed": 5}
    assert await refresh_batch({**ctx, "job_try": 2}, claims) == {"skipped": 5}  # arq ran it again
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:5], 1)


def job_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [record.__dict__ for record in caplog.records if record.message == "refresh job"]


async def test_a_batch_logs_one_line_naming_its_mailboxes_by_outcome_and_no_info_line_per_routine_cycle(
    runtime, arq_redis, sandbox, caplog
) -> None:
    [claims] = await scanned(runtime, arq_redis, MANY[:5])
    ids = sorted(mailbox_id for mailbox_id, _ in claims)
    with caplog.at_level(logging.INFO):
        await refresh_batch(job_ctx(runtime, arq_redis), claims)
        await refresh_batch(job_ctx(runtime, arq_redis, job_try=2), claims)
    [first, second] = job_lines(caplog)
    assert (sorted(first["refreshed"]), sorted(second["skipped"])) == (ids, ids)  # arq ran it again: nothing to do
    assert not [record for record in caplog.records if record.message == "refresh cycle"]


async def test_a_routine_refresh_logs_its_cycle_line_at_debug_and_a_failure_at_info(
    runtime, arq_redis, sandbox, caplog
) -> None:
    [claims] = await scanned(runtime, arq_redis, [MANY[0], *tokens(1, "unknown-to-the-sandbox")])  # invalid_grant
    with caplog.at_level(logging.DEBUG, logger="statemachine.services.cycle"):  # TOKENWARDEN_LOG_LEVEL=DEBUG
        assert await refresh_batch(job_ctx(runtime, arq_redis), claims) == {"refreshed": 1, "failed": 1}
    lines = {record.outcome: record.levelname for record in caplog.records if record.message == "refresh cycle"}  # type: ignore[attr-defined]
    assert lines == {"refreshed": "DEBUG", "failed": "INFO"}


async def test_a_claim_another_job_took_is_skipped_and_the_others_refreshed(runtime, arq_redis, sandbox) -> None:
    [claims] = await scanned(runtime, arq_redis, MANY[:4])
    ctx = job_ctx(runtime, arq_redis)
    taken_id, taken_owner = claims[2]
    assert await refresh_mailbox(ctx, taken_id, taken_owner) == "refreshed"  # e.g. a re-claim's other job
    assert await refresh_batch(ctx, claims) == {"refreshed": 3, "skipped": 1}
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:4], 1)


async def test_a_cycle_that_raises_neither_stops_nor_cancels_the_others_and_the_job_raises_after(
    runtime, arq_redis, sandbox, monkeypatch, caplog
) -> None:
    [claims] = await scanned(runtime, arq_redis, MANY[:5])
    broken_id = claims[0][0]
    for token in MANY[1:5]:  # the others are still waiting for the provider when the broken one raises
        sandbox.fault(mode="timeout", seconds=STALL_SECONDS, refresh_token=token, count=1)
    real_run_cycle = jobs.refresh.run_cycle

    async def run_cycle(deps: Any, mailbox_id: int, **kwargs: Any) -> CycleResult:
        if mailbox_id == broken_id:
            raise RuntimeError("a bug")
        return await real_run_cycle(deps, mailbox_id, **kwargs)

    monkeypatch.setattr(jobs.refresh, "run_cycle", run_cycle)
    with caplog.at_level(logging.INFO, logger="jobs.refresh"), pytest.raises(RuntimeError, match="a bug"):
        await refresh_batch(job_ctx(runtime, arq_redis), claims)
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[1:5], 1)
    states = dict(await fetch(runtime, "select id, state from mailboxes where last_refreshed_at is not null"))
    assert sorted(states) == sorted(mailbox_id for mailbox_id, _ in claims[1:])
    [line] = [record for record in caplog.records if record.message == "refresh cycle raised"]
    assert (line.mailbox_id, line.error) == (broken_id, "RuntimeError")  # type: ignore[attr-defined]
    [job] = job_lines(caplog)
    assert (job["raised"], sorted(job["refreshed"])) == ([broken_id], sorted(id_ for id_, _ in claims[1:]))

    monkeypatch.setattr(jobs.refresh, "run_cycle", real_run_cycle)  # arq runs the batch again, say
    assert await refresh_batch(job_ctx(runtime, arq_redis, job_try=2), claims) == {"refreshed": 1, "skipped": 4}
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:5], 1)


async def in_flight(runtime: Runtime, scan_owners: list[str]) -> int:
    """Cycles running now: rows whose scan claim a cycle took over (a fresh owner) and has not released yet."""
    sql = "select count(*) from mailboxes where lease_owner is not null and lease_owner::text <> all(:owners)"
    ((count,),) = await fetch(runtime, sql, owners=scan_owners)
    return int(count)


async def test_the_process_slots_bound_the_cycles_running_at_once_across_batches(runtime, arq_redis, sandbox) -> None:
    batches = await scanned(runtime, arq_redis, MANY)
    for token in MANY:
        sandbox.fault(mode="timeout", seconds=STALL_SECONDS, refresh_token=token, count=1)
    slots = 3
    ctx = job_ctx(runtime, arq_redis, refresh_slots=asyncio.Semaphore(slots))
    running = asyncio.gather(*(refresh_batch(ctx, claims) for claims in batches))
    owners = [owner for claims in batches for _, owner in claims]
    seen = set()
    while not running.done():
        seen.add(await in_flight(runtime, owners))
        await asyncio.sleep(0.02)
    assert sum(result["refreshed"] for result in await running) == len(MANY)
    assert max(seen) == slots  # reached, never passed, with all 23 cycles waiting for them
    assert sandbox.requests_by_token() == dict.fromkeys(MANY, 1)


async def test_when_every_cycle_of_the_default_slots_fails_at_once_each_records_it_on_fewer_connections_than_cycles(
    runtime, arq_redis, sandbox
) -> None:
    slots = runtime.settings.worker_max_jobs
    assert (slots, pool_size_for(slots)) == (40, 14)
    assert 2 * pool_size_for(slots) < slots  # the ORM pool holds 14 and 14 more: some failures wait for one
    unknown = tokens(slots, "revoked-everywhere")  # the sandbox answers invalid_grant to each
    batches = await scanned(runtime, arq_redis, unknown)
    results = await asyncio.gather(*(refresh_batch(job_ctx(runtime, arq_redis), claims) for claims in batches))
    assert sum(result["failed"] for result in results) == slots  # none raised waiting for a connection
    recorded = "select count(*) from mailbox_state_transitions where event = 'refresh_failed_permanent'"
    assert await scalar(runtime, recorded) == slots
    assert await fetch(runtime, "select distinct state, lease_owner from mailboxes") == [("retrying", None)]


async def test_a_claim_whose_due_time_a_timed_job_waits_for_stays_out_of_the_batch(runtime, arq_redis, sandbox) -> None:
    ids = await add_mailboxes(runtime, MANY[:3])
    ((due,),) = await fetch(runtime, "select next_refresh_at from mailboxes where id = :id", id=ids[1])
    assert await timed.refresh_at(arq_redis, [(ids[1], due)], 60, due) == 1
    totals = await scan_due({"runtime": runtime, "redis": arq_redis})
    assert totals == {"claimed": 3, "timed": 1, "enqueued": 2, "batches": 1}
    [batch] = await arq_redis.queued_jobs(queue_name=REFRESH_QUEUE)
    assert sorted(mailbox_id for mailbox_id, _ in batch.args[0]) == [ids[0], ids[2]]
    await drain(runtime, arq_redis)  # the batch and the timed job, which takes its claim over
    assert sandbox.requests_by_token() == dict.fromkeys(MANY[:3], 1)


def test_a_batch_job_outlasts_its_cycles_queued_behind_every_other_batch_of_the_process() -> None:
    settings = load_settings({"TOKENWARDEN_LEASE_SECONDS": "60", "TOKENWARDEN_WORKER_MAX_JOBS": "4"})
    functions = {function.name: function for function in worker_settings(settings)["functions"]}
    assert functions["refresh_mailbox"].timeout_s == refresh_timeout_seconds(settings) == 55
    # 4 slots: batches of 8, 4 of them at once: 32 cycles in 4 slots, 8 rounds of a whole cycle timeout at
    # worst, and a margin
    assert batch_jobs_in_flight(4) == 4
    assert functions["refresh_batch"].timeout_s == batch_timeout_seconds(settings) == 8 * 55 + 10


@pytest.mark.parametrize("overrides", [{"TOKENWARDEN_WORKER_MAX_JOBS": "2"}])
async def test_a_worker_takes_only_the_batches_its_slots_can_run_and_leaves_the_rest_queued(
    runtime, arq_redis, redis_url, sandbox
) -> None:
    batches = await scanned(runtime, arq_redis, MANY)
    assert sorted(len(claims) for claims in batches) == [3, 4, 4, 4, 4, 4]  # two rounds of the 2 slots per batch
    for token in MANY:
        sandbox.fault(mode="timeout", seconds=STALL_SECONDS / 2, refresh_token=token, count=1)
    held = set()
    async with running_worker(runtime, redis_url) as worker:
        lane = worker.lane(REFRESH_QUEUE)
        while await scalar(runtime, "select count(*) from mailboxes where last_refreshed_at is null"):
            held.add(sum(not task.done() for task in lane.tasks.values()))
            await asyncio.sleep(0.02)
    # 2 slots hold 4 batches of 4 (what they run in a poll delay at the quickest cycle); the other 2 waited in
    # Redis, where another worker could have taken them
    assert max(held) == batch_jobs_in_flight(2) == 4
    assert worker.jobs_failed == 0
    assert sandbox.requests_by_token() == dict.fromkeys(MANY, 1)
