"""Exact timing for near-term work: deferred refresh jobs, and emails handed to delivery at once.

Why: riding on the due-scan, a confirming cycle due in 60 s starts up to a scan interval late, and
its email waits for the next outbox sweep. So when a committed outcome makes a mailbox due within
TOKENWARDEN_EXACT_TIMING_SECONDS (the confirming cycle, the first retries, the retry after an
incident closes), a refresh job is deferred to that moment; it claims the mailbox through the scan's
own statement (store/scheduling.py), so it and a scan never both run the cycle. New outbox rows are
enqueued for delivery under the id the sweep would give them. Both are best effort: if Redis fails
here, the due-scan and the sweep are the safety net.

A user's notice must not wait behind bulk work (the mailboxes an incident held, all retried when it
closes): confirming cycles and deliveries go to their own queue, `URGENT_QUEUE`, which every worker
process also serves with a few slots of its own (jobs/serve.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis.exceptions
from arq.connections import ArqRedis

from jobs import mail
from jobs.scan import ENQUEUE_CONCURRENCY, REFRESH_JOB
from statemachine.core.states import FailureKind
from statemachine.services.cycle import CycleResult
from statemachine.store.scheduling import timed_job_id

logger = logging.getLogger(__name__)

URGENT_QUEUE = "arq:queue:urgent"
REDIS_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


async def refresh_at(
    redis: ArqRedis,
    due: Iterable[tuple[int, datetime]],
    horizon_seconds: float,
    now: datetime,
    *,
    urgent: bool = False,
) -> int:
    """Defer a refresh job to each (mailbox, due time) within the horizon (0: none); return how many were enqueued."""
    horizon = timedelta(seconds=horizon_seconds)
    soon = [(mailbox_id, at) for mailbox_id, at in due if horizon_seconds > 0 and at - now <= horizon]
    if not soon:  # a routine refresh's next attempt, most of the time: no gate, no gather
        return 0
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(mailbox_id: int, at: datetime) -> bool:
        async with gate:
            job_id = timed_job_id(mailbox_id, at)
            queue = URGENT_QUEUE if urgent else None
            job = await redis.enqueue_job(
                REFRESH_JOB, mailbox_id, at, _job_id=job_id, _defer_until=at, _queue_name=queue
            )
            return job is not None

    try:
        return sum(await asyncio.gather(*(one(mailbox_id, at) for mailbox_id, at in soon)))
    except REDIS_ERRORS as err:
        logger.warning("could not time the next refreshes; the due-scan will", extra={"error": type(err).__name__})
        return 0


async def deliver_now(redis: ArqRedis, notification_ids: Iterable[int]) -> None:
    """Hand committed outbox rows to delivery now, under the job id the sweep would use for them."""
    try:
        for notification_id in notification_ids:
            job_id = mail.job_id(notification_id, 0)
            await redis.enqueue_job(mail.DELIVER_JOB, notification_id, _job_id=job_id, _queue_name=URGENT_QUEUE)
    except REDIS_ERRORS as err:
        logger.warning("could not hand emails to delivery; the sweep will", extra={"error": type(err).__name__})


async def follow_up(redis: ArqRedis, result: CycleResult, horizon_seconds: float, now: datetime) -> None:
    """After a committed cycle: its emails to delivery, and its next attempt timed if it is near.

    After a permanent error the next attempt is the confirming cycle, which decides a user's notice: urgent.
    """
    outcome = result.outcome
    if outcome is None:
        return
    await deliver_now(redis, outcome.notifications)
    if outcome.next_refresh_at is not None:
        confirming = result.verdict is not None and result.verdict.kind is FailureKind.PERMANENT
        due = [(outcome.mailbox_id, outcome.next_refresh_at)]
        await refresh_at(redis, due, horizon_seconds, now, urgent=confirming)
