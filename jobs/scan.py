"""The due-scan (an arq cron): claim due mailboxes in PostgreSQL, then enqueue their refresh jobs, one per batch.

Claims are committed before anything is enqueued, in short batches, so a crash in between leaves
only leases that run out and are claimed again: Redis may lose every job and no mailbox is
forgotten. Each `refresh_batch` job carries up to `refresh_batch_size` claims, on the refresh queue
(`REFRESH_QUEUE`, served by each worker's batch lane, jobs/worker.py), under an id derived
from them, so a batch enqueued twice runs once; and a claim carried by two jobs (a batch that arq
runs again, a re-claim batched differently) is still refreshed once: the cycle's takeover of the
claim lets only one of them run it (jobs/refresh.py). A claim whose due time already has a timed job
waiting (jobs/timed.py) stays out of the batches: the timed job takes the claim over at its moment,
and the scan adds nothing to a burst of timed work.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from statemachine.store.scheduling import Claim, claim_owner, epoch_ms, timed_job_id

logger = logging.getLogger(__name__)

REFRESH_JOB = "refresh_mailbox"
REFRESH_BATCH_JOB = "refresh_batch"
REFRESH_QUEUE = "arq:queue:refresh"
MAX_REFRESH_BATCH_SIZE = 40
ENQUEUE_CONCURRENCY = 20


def refresh_batch_size(worker_max_jobs: int) -> int:
    """Claims per batch job: twice a worker's cycle slots, at most 40 (40, one round, at the default 40 slots).

    arq's and Redis's cost per job (about 17 commands) is shared by that many refreshes (it was 8 % of a worker's
    CPU with batches of 20, `make bench`'s profile), and a worker's batch lane takes only as many jobs as keep its
    slots busy, so what a worker holds stays a few rounds of its slots.
    """
    return max(1, min(MAX_REFRESH_BATCH_SIZE, 2 * worker_max_jobs))


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
        totals.update(await enqueue_claims(ctx["redis"], claims, now, refresh_batch_size(settings.worker_max_jobs)))
        if len(claims) < settings.scan_batch_size or time.monotonic() >= deadline:
            break
    if totals["claimed"]:
        logger.info("due-scan", extra=dict(totals))
    return dict(totals)


async def enqueue_claims(redis: ArqRedis, claims: list[Claim], now: datetime, batch_size: int) -> Counter[str]:
    """Leave the claims a timed job takes over to it, batch the others and enqueue the batches a few at a time;
    count what happened to each claim, and the batch jobs added."""
    timed = await _timed_jobs_will_take_over(redis, claims)
    rest = [claim for claim in claims if claim not in timed]
    batches = [rest[start : start + batch_size] for start in range(0, len(rest), batch_size)]
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(batch: list[Claim]) -> Counter[str]:
        async with gate:
            outcome = await _enqueue(redis, batch, now)
        return Counter({outcome: len(batch), "batches": int(outcome != "already_queued")})

    return sum(await asyncio.gather(*(one(batch) for batch in batches)), +Counter(timed=len(timed)))


async def _timed_jobs_will_take_over(redis: ArqRedis, claims: list[Claim]) -> set[Claim]:
    """The claims whose due time has a timed job waiting (in any queue) that takes them over: one command.

    A running one may be a dead worker's, which arq holds for minutes: the scan's job runs too (only one
    of the two takes the claim over). An owner left by a dead job is carried only by the scan's jobs.
    """
    derived = [claim for claim in claims if claim.owner == claim_owner(claim.mailbox_id, claim.due)]
    if not derived:
        return set()
    keys: list[str] = []
    for claim in derived:
        job_id = timed_job_id(claim.mailbox_id, claim.due)
        keys += (job_key_prefix + job_id, in_progress_key_prefix + job_id)
    waiting = await redis.eval(_WAITING_JOBS, len(keys), *keys)  # type: ignore[misc]  # redis-py's union return
    return {claim for claim, waits in zip(derived, waiting, strict=True) if waits}


# For each (job key, in-progress key) pair: 1 when that job is queued and not running. One EVAL rather than two
# EXISTS per claim: the due-scan's Redis work per 1,000 claims went from 2,000 commands to one.
_WAITING_JOBS = """
local waiting = {}
for i = 1, #KEYS, 2 do
  waiting[#waiting + 1] = (redis.call('exists', KEYS[i]) == 1 and redis.call('exists', KEYS[i + 1]) == 0) and 1 or 0
end
return waiting
"""


def batch_job_id(batch: list[Claim]) -> str:
    """The same claims give the same id, so a batch enqueued twice (a re-claim of the same burst) runs once."""
    pairs = ",".join(sorted(f"{claim.mailbox_id}:{claim.owner}" for claim in batch))
    return "refresh-batch:" + hashlib.blake2b(pairs.encode(), digest_size=12).hexdigest()


async def _enqueue(redis: ArqRedis, batch: list[Claim], now: datetime) -> str:
    job_id = batch_job_id(batch)
    args = (REFRESH_BATCH_JOB, [(claim.mailbox_id, str(claim.owner)) for claim in batch])
    if await redis.enqueue_job(*args, _job_id=job_id, _queue_name=REFRESH_QUEUE) is not None:
        return "enqueued"
    if await Job(job_id, redis, _queue_name=REFRESH_QUEUE).status() in (JobStatus.queued, JobStatus.deferred):
        return "already_queued"  # it will run, and the claims kept their owners for it
    # "In progress" although the leases ran out means its worker died (most likely: a live batch's cycles keep
    # their leases, only claims still waiting for a slot lose theirs), and
    # arq would retry it only once its in-progress key expires; a failed job's result blocks the id for
    # a moment. Either way, enqueue anew: the cycle's takeover of each claim lets only one of the two jobs run it.
    await redis.enqueue_job(*args, _job_id=f"{job_id}:reclaim:{epoch_ms(now)}", _queue_name=REFRESH_QUEUE)
    return "re-enqueued"
