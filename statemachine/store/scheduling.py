"""Who refreshes what, when: PostgreSQL is the scheduler, the job queue only carries the work.

A claim is a lease on a due mailbox (`lease_owner`, `lease_until`) written by the due-scan. The owner
identifies the claim of one due time: when a lease runs out before its job ran (a worker died, Redis
lost the job, or the queue was slower than the lease), the next scan claims the row again *keeping
the owner*, so the job still queued for it remains valid. A job starts by swapping the owner for a
fresh one of its own (`start_claim`), which only one job can do: a second copy of the job, or an old
one that arq runs again later, finds the owner changed (or released by the finished cycle) and does
nothing. That makes every due time's refresh happen once, whatever the queue does.

Near-term work is also timed exactly: a job deferred to the due moment (`timed_job_id`) claims its
one mailbox with the scan's own statement (due and unleased only), then takes the claim over like
any scan's job. A new claim's owner is derived from the mailbox and its due time (`claim_owner`),
whoever makes it: so when the scan claimed that due time first, the timed job takes the scan's claim
over instead of waiting behind the scan's job in the queue. Whichever job takes the claim over first
runs the cycle; the other finds the owner changed, or the row no longer due, and does nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import BigInteger, Text, func, select, true, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.models import Mailbox, Notification


@dataclass(frozen=True)
class Claim:
    """A due mailbox leased to `owner`; `reclaimed` when an earlier claim of it ran out unfinished."""

    mailbox_id: int
    owner: uuid.UUID
    due: datetime
    reclaimed: bool


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def claim_owner(mailbox_id: int, due: datetime) -> uuid.UUID:
    """The owner of the claim of one mailbox's due time, the same in Python and in SQL (`_claim_owner_sql`)."""
    micros = (due - EPOCH) // timedelta(microseconds=1)
    return uuid.UUID(hashlib.md5(f"{mailbox_id}:{micros}".encode(), usedforsecurity=False).hexdigest())


def _claim_owner_sql() -> Any:
    micros = func.floor(func.extract("epoch", Mailbox.next_refresh_at) * 1_000_000).cast(BigInteger)
    return func.md5(func.concat(Mailbox.id.cast(Text), ":", micros.cast(Text))).cast(UUID(as_uuid=True))


def timed_job_id(mailbox_id: int, due: datetime) -> str:
    """The deferred job of one due time: enqueued twice (a retried job, an incident's close), it runs once."""
    return f"refresh:{mailbox_id}:{epoch_ms(due)}:timed"


async def claim_due(
    session: AsyncSession, now: datetime, limit: int, lease_seconds: float, *, mailbox_id: int | None = None
) -> list[Claim]:
    """Lease up to `limit` due, unleased mailboxes (oldest due first), skipping rows other scans hold.

    With `mailbox_id`, only that mailbox (a timed job's claim).
    """
    only = Mailbox.id == mailbox_id if mailbox_id is not None else true()
    due = (
        select(Mailbox.id, Mailbox.lease_owner.label("previous"))
        .where(
            only,
            Mailbox.next_refresh_at <= now,
            (Mailbox.lease_until.is_(None)) | (Mailbox.lease_until <= now),
        )
        .order_by(Mailbox.next_refresh_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .subquery()
    )
    statement = (
        update(Mailbox)
        .where(Mailbox.id == due.c.id)
        .values(
            lease_owner=func.coalesce(Mailbox.lease_owner, _claim_owner_sql()),
            lease_until=now + timedelta(seconds=lease_seconds),
        )
        .returning(Mailbox.id, Mailbox.lease_owner, Mailbox.next_refresh_at, due.c.previous.is_not(None))
    )
    rows = (await session.execute(statement)).all()
    # the owner is coalesced to a new uuid and the due time was compared, so neither is NULL here
    claims = [Claim(*cast(tuple[int, uuid.UUID, datetime, bool], row)) for row in rows]
    return sorted(claims, key=lambda claim: claim.due)


async def overdue_count(session: AsyncSession, due_before: datetime) -> int:
    """Mailboxes whose refresh was due before `due_before` and has not happened yet."""
    statement = select(func.count()).select_from(Mailbox).where(Mailbox.next_refresh_at < due_before)
    return int(await session.scalar(statement) or 0)


async def outbox_backlog(session: AsyncSession) -> int:
    statement = select(func.count()).select_from(Notification).where(Notification.status == "pending")
    return int(await session.scalar(statement) or 0)
