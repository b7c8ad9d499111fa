"""The due-scan (an arq cron): claim due mailboxes in PostgreSQL, then enqueue one refresh job per claim.

Claims are committed before anything is enqueued, in short batches, so a crash in between leaves
only leases that run out and are claimed again: Redis may lose every job and no mailbox is
forgotten. The job id names the mailbox and its due time, so a claim enqueued twice runs once. A
claim whose due time already has a timed job waiting (jobs/timed.py) gets no job of its own: the
timed job takes the claim over at its moment, and the scan adds nothing to a burst of timed work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import Job, JobStatus

from statemachine.services.runtime import Runtime
from statemachine.store import scheduling
from statemachine.store.scheduling import Claim, claim_owner, timed_job_id

logger = logging.getLogger(__name__)

REFRESH_JOB = "refresh_mailbox"
ENQUEUE_CONCURRENCY = 20


def scan_budget_seconds(interval_seconds: float) -> float:
    """Stop claiming new batches after this long, so one scan never runs into the next one."""
    return max(1.0, 0.8 * interval_seconds)


async def scan_due(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Claim and enqueue every due mailbox, batch by batch, until none is due or the time budget is spent."""
    runtime: Runtime = ctx["runtime"]
    settings = runtime.settings
    deadline = time.monotonic() + scan_budget_seconds(settings.scan_interval_seconds)
    totals: Counter[str] = Counter()
    while True:
        now = datetime.now(UTC)
        async with runtime.sessionmaker() as session, session.begin():
            claims = await scheduling.claim_due(session, now, settings.scan_batch_size, settings.lease_seconds)
        totals["claimed"] += len(claims)
        if reclaimed := sum(claim.reclaimed for claim in claims):
            totals["reclaimed"] += reclaimed  # leases that ran out before their job finished
        totals.update(await enqueue_claims(ctx["redis"], claims, now))
        if len(claims) < settings.scan_batch_size or time.monotonic() >= deadline:
            break
    if totals["claimed"]:
        logger.info("due-scan", extra=dict(totals))
    return dict(totals)


async def enqueue_claims(redis: ArqRedis, claims: list[Claim], now: datetime) -> Counter[str]:
    """Enqueue the claims' jobs a few at a time; count what happened to each."""
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(claim: Claim) -> str:
        async with gate:
            return await _enqueue(redis, claim, now)

    return Counter(await asyncio.gather(*(one(claim) for claim in claims)))


async def _timed_job_will_take_over(redis: ArqRedis, claim: Claim) -> bool:
    """A timed job of this due time waits (in any queue), and this claim is the one it takes over.

    A running one may be a dead worker's, which arq holds for minutes: the scan's job runs too (only one
    of the two takes the claim over).
    """
    if claim.owner != claim_owner(claim.mailbox_id, claim.due):
        return False  # an owner left by a dead job: only this claim's own job carries it
    job_id = timed_job_id(claim.mailbox_id, claim.due)
    return bool(await redis.exists(job_key_prefix + job_id)) and not await redis.exists(in_progress_key_prefix + job_id)


async def _enqueue(redis: ArqRedis, claim: Claim, now: datetime) -> str:
    if await _timed_job_will_take_over(redis, claim):
        return "timed"
    args = (REFRESH_JOB, claim.mailbox_id, str(claim.owner))
    if await redis.enqueue_job(*args, _job_id=claim.job_id) is not None:
        return "enqueued"
    if await Job(claim.job_id, redis).status() in (JobStatus.queued, JobStatus.deferred):
        return "already_queued"  # it will run, and the claim kept its owner for it
    # "In progress" although the lease ran out means its worker died (a live job keeps its lease), and
    # arq would retry it only once its in-progress key expires; a failed job's result blocks the id for
    # a moment. Either way, enqueue anew: the cycle's takeover of the claim lets only one of the two jobs run it.
    await redis.enqueue_job(*args, _job_id=claim.fallback_job_id(now))
    return "re-enqueued"
