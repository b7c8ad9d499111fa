"""The reminders cron: queue the due reminders of disconnected mailboxes into the outbox.

Thin on purpose: who is owed which reminder is statemachine/reminders.py's decision; this job only
opens the transaction and reports. The outbox sweeper (jobs/mail.py) delivers the rows like any
other email. It runs on the outbox's schedule (jobs/worker.py), so seconds-scale
`TOKENWARDEN_REMINDER_DAYS` work in tests and the demo; a run with nothing due is one indexed query.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from statemachine.services.reminders import queue_due_reminders
from statemachine.services.runtime import Runtime

logger = logging.getLogger(__name__)


async def queue_reminders(ctx: Mapping[str, Any], now: datetime | None = None) -> dict[str, int]:
    """One transaction: find the mailboxes owed a reminder at `now` (default: the clock) and queue them."""
    runtime: Runtime = ctx["runtime"]
    async with runtime.sessionmaker() as session, session.begin():
        queued = await queue_due_reminders(
            session, runtime.events, runtime.settings.reminder_days, now or datetime.now(UTC)
        )
    for mailbox_id, occasion in queued:
        logger.info("reminder queued", extra={"mailbox_id": mailbox_id, "occasion": occasion})
    return {"queued": len(queued)}
