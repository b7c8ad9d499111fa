"""`refresh_mailbox`: one job, one claimed mailbox, exactly the refresh cycle `tokenwarden refresh` runs.

The cycle takes the mailbox over from the scan's claim in the same statement that leases it; a copy
of the job that arq runs again, or a job whose claim is finished or held by another job, does
nothing. It logs one line per state transition (the cycle counts itself: statemachine/services/metrics.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from statemachine.services.cycle import CycleResult, run_cycle
from statemachine.services.logs import log_context
from statemachine.services.runtime import Runtime
from statemachine.store.repository import UnknownMailboxError

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"


async def refresh_mailbox(ctx: Mapping[str, Any], mailbox_id: int, lease_owner: str) -> str:
    """Refresh one mailbox under the scan's claim `lease_owner`; returns what happened, for arq's log."""
    runtime: Runtime = ctx["runtime"]
    with log_context(job_id=ctx.get("job_id"), job_try=ctx.get("job_try")):
        try:
            result = await run_cycle(runtime.cycle_deps(), mailbox_id, actor=WORKER_ACTOR, claim=uuid.UUID(lease_owner))
        except UnknownMailboxError:
            logger.warning("refresh job for a mailbox that does not exist", extra={"mailbox_id": mailbox_id})
            return "unknown"
        if result.provider is None:
            logger.info("refresh job skipped: its claim is finished or taken", extra={"mailbox_id": mailbox_id})
            return "skipped"
        log_transitions(result, result.provider)
        return result.status


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
