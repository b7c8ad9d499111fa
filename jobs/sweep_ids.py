"""The due rows a sweep hands to delivery, and the arq job id it gives each (and why that id changes).

arq refuses a job id it still holds, and a worker killed while running a job leaves that job and its
in-progress key in Redis until arq's in-progress timeout lapses (the longest job timeout + 10 s: about
five minutes). A job killed before it claimed its row leaves the row due and unlocked, yet every sweep's
enqueue under the same id is refused, so the row waits those minutes. Once a row has been claimable
for a stale period, the sweep adds a generation to the id: a fresh job. An extra job for a row that
another job holds does nothing (the claim guards the row), so this never sends twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func as sql, select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.models import Notification, WebhookDelivery


async def due_rows(
    session: AsyncSession, outbox: type[Notification | WebhookDelivery], sendable: tuple[Any, ...], limit: int
) -> list[tuple[int, int, float]]:
    """(id, attempts, seconds claimable) of the outbox's rows that are `sendable`, oldest due first; a row is
    claimable since it fell due and any lock of a dead job lapsed."""
    waited = sql.extract("epoch", sql.now() - sql.greatest(outbox.next_attempt_at, outbox.locked_until))
    statement = (
        select(outbox.id, outbox.attempts, waited.label("waited"))
        .where(*sendable)
        .order_by(outbox.next_attempt_at, outbox.id)
        .limit(limit)
    )
    return [(row.id, row.attempts, float(row.waited)) for row in await session.execute(statement)]


def sweep_job_id(base: str, waited: float, stale_seconds: float) -> str:
    """`base` while the row is freshly due; `base:n` after n stale periods, so a stuck job cannot hold it."""
    generation = int(max(waited, 0.0) // max(stale_seconds, 1.0))
    return base if generation == 0 else f"{base}:{generation}"
