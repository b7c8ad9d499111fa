"""`refresh_mailbox`: one job, one claimed mailbox, exactly the refresh cycle `tokenwarden refresh` runs.

The cycle takes the mailbox over from the scan's claim in the same statement that leases it; a copy
of the job that arq runs again, or a job whose claim is finished or held by another job, does
nothing. A timed job (jobs/timed.py) comes without a claim: it first claims its mailbox as the scan
would, only if it is due and unleased; if the scan claimed that due time first, it takes the scan's
claim over (store/scheduling.py). The job logs one line per state transition (the cycle counts itself:
statemachine/services/metrics.py), then hands the new emails to delivery and times the next attempt if it
is near.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobs import timed
from statemachine.services.cycle import CycleResult, run_cycle
from statemachine.services.logs import log_context
from statemachine.services.runtime import Runtime
from statemachine.store import scheduling
from statemachine.store.repository import UnknownMailboxError

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"


async def refresh_mailbox(ctx: Mapping[str, Any], mailbox_id: int, claim: str | datetime) -> str:
    """Refresh one mailbox under `claim`: the scan's lease owner, or a timed job's due moment; returns what
    happened, for arq's log."""
    runtime: Runtime = ctx["runtime"]
    with log_context(job_id=ctx.get("job_id"), job_try=ctx.get("job_try")):
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
