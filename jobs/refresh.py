"""The refresh jobs: each runs, per claimed mailbox, exactly the refresh cycle `tokenwarden refresh` runs.

`refresh_batch` is what the due-scan enqueues: a few claims, their cycles run concurrently, each with
its own lease and its own transactions, at most `worker_max_jobs` cycles at once in the process
(40 by default: a cycle mostly waits for its provider, and the cycles that start or end together share
their statements). One job per batch rather than per mailbox spares arq's and Redis's per-job cost.
`refresh_mailbox` carries one claim: a timed job's (jobs/timed.py), or a job an older release queued.

Each cycle takes the mailbox over from the scan's claim in the same statement that leases it; that
takeover is what makes each due time's refresh happen once: a batch that arq runs again, or a claim
also carried by another job, finished or held, does nothing for that claim ("skipped"). A timed
job comes without a claim: it first claims its mailbox as the scan would, only if it is due and
unleased; if the scan claimed that due time first, it takes the scan's claim over
(store/scheduling.py). The jobs log one line per state transition (the cycle counts itself:
statemachine/services/metrics.py), then hand the new emails to delivery and time the next attempt
if it is near. Each job logs one `refresh job` line naming its mailboxes by outcome: the only INFO
line of a routine refresh, whose own cycle line is DEBUG (services/cycle.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobs import timed
from statemachine.services.cycle import CycleResult, run_cycle
from statemachine.services.logs import log_context
from statemachine.services.runtime import Runtime
from statemachine.services.settings import Settings
from statemachine.store import scheduling
from statemachine.store.repository import UnknownMailboxError

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"


def refresh_timeout_seconds(settings: Settings) -> float:
    """A cycle ends before its lease does, so no other job can take the mailbox while it runs."""
    return settings.lease_seconds - min(5.0, settings.lease_seconds * 0.1)


def cycle_slots(settings: Settings) -> asyncio.Semaphore:
    """The process's bound on batch cycles running at once (its cycles share their statements: the database pools
    are smaller, services/runtime.py `pool_size_for`)."""
    return asyncio.Semaphore(settings.worker_max_jobs)


async def refresh_mailbox(ctx: Mapping[str, Any], mailbox_id: int, claim: str | datetime) -> str:
    """Refresh one mailbox under `claim`: the scan's lease owner, or a timed job's due moment; returns what
    happened, for arq's log."""
    with log_context(job_id=ctx.get("job_id"), job_try=ctx.get("job_try")):
        status = await refresh_claim(ctx, mailbox_id, claim)
        _log_job([mailbox_id], [status])
    return status


async def refresh_batch(ctx: Mapping[str, Any], claims: list[tuple[int, str]]) -> dict[str, int]:
    """Refresh each (mailbox, scan's claim owner) concurrently, in the process's slots (`ctx["refresh_slots"]`).

    A cycle that raises neither stops nor cancels the others; once all have ended, the first error is
    raised, so arq fails the batch as it fails a single job that raised (the cycles that ran stay done).
    Returns how many claims ended how, for arq's log.
    """
    slots: asyncio.Semaphore = ctx["refresh_slots"]
    timeout = refresh_timeout_seconds(ctx["runtime"].settings)

    async def one(mailbox_id: int, owner: str) -> str:
        async with slots, asyncio.timeout(timeout):  # the timeout starts with the cycle: its lease is fresh
            return await refresh_claim(ctx, mailbox_id, owner)

    with log_context(job_id=ctx.get("job_id"), job_try=ctx.get("job_try")):
        ended = await asyncio.gather(*(one(mailbox_id, owner) for mailbox_id, owner in claims), return_exceptions=True)
        errors = _log_errors([mailbox_id for mailbox_id, _ in claims], ended)
        _log_job([mailbox_id for mailbox_id, _ in claims], ended)
    if errors:
        raise errors[0]
    return dict(Counter(result for result in ended if isinstance(result, str)))


def _log_errors(mailbox_ids: list[int], ended: list[str | BaseException]) -> list[BaseException]:
    """One line per cycle that raised: its mailbox and the error's class (never its text, which might quote
    a statement's parameters); arq logs the one re-raised in full, as for a single job."""
    errors = [(mailbox_id, result) for mailbox_id, result in zip(mailbox_ids, ended, strict=True)
              if isinstance(result, BaseException)]  # fmt: skip
    for mailbox_id, error in errors:
        logger.error("refresh cycle raised", extra={"mailbox_id": mailbox_id, "error": type(error).__name__})
    return [error for _, error in errors]


def _log_job(mailbox_ids: list[int], ended: list[str | BaseException]) -> None:
    """One line per job: its mailbox ids under each outcome (`refreshed`, `failed`, `skipped`, ..., `raised`).

    It stands for the DEBUG lines of routine refreshes: one line per job rather than per cycle keeps the logs of a
    large fleet in proportion (1,000,000 mailboxes on 1-hour tokens make 24 M cycles a day), and an operator
    still finds when a mailbox was last refreshed by searching for its id.
    """
    by_outcome: dict[str, list[int]] = {}
    for mailbox_id, result in zip(mailbox_ids, ended, strict=True):
        by_outcome.setdefault(result if isinstance(result, str) else "raised", []).append(mailbox_id)
    logger.info("refresh job", extra=by_outcome)


async def refresh_claim(ctx: Mapping[str, Any], mailbox_id: int, claim: str | datetime) -> str:
    """A job's whole work for one claim: take it over and run the cycle, then log and follow up its outcome."""
    runtime: Runtime = ctx["runtime"]
    owner = await _claim(runtime, mailbox_id, claim) if isinstance(claim, datetime) else uuid.UUID(claim)
    try:
        result = await run_cycle(runtime.cycle_deps(), mailbox_id, actor=WORKER_ACTOR, claim=owner)
    except UnknownMailboxError:
        logger.warning("refresh job for a mailbox that does not exist", extra={"mailbox_id": mailbox_id})
        return "unknown"
    if result.provider is None:
        logger.info("refresh job skipped: its claim is finished or taken", extra={"mailbox_id": mailbox_id})
        return "skipped"
    log_transitions(result, result.provider)
    await timed.follow_up(ctx["redis"], result, runtime.settings.exact_timing_seconds, datetime.now(UTC))
    return result.status


async def _claim(runtime: Runtime, mailbox_id: int, due: datetime) -> uuid.UUID:
    """The claim a timed job takes over: its own if the mailbox is due and unleased, else the scan's of `due`.

    arq may start the job up to 0.5 ms early (it rounds to milliseconds), so `due` counts as now.
    """
    now = datetime.now(UTC)
    async with runtime.sessionmaker() as session, session.begin():
        claims = await scheduling.claim_due(
            session, max(now, due), 1, runtime.settings.lease_seconds, mailbox_id=mailbox_id
        )
    return claims[0].owner if claims else scheduling.claim_owner(mailbox_id, due)


def log_transitions(result: CycleResult, provider: str) -> None:
    """One line per history row the cycle wrote (reasons are our plain words, never a token)."""
    if result.outcome is None:
        return
    for record in result.outcome.records:
        logger.info(
            "state transition",
            extra={
                "mailbox_id": result.mailbox_id,
                "provider": provider,
                "event": record.event,
                "from_state": record.from_state,
                "to_state": record.to_state,
                "error_code": record.error_code,
                "attempt": record.attempt,
                "actor": record.actor,
                "reason": record.reason,
            },
        )
