"""Database access for mailboxes: leases, row locks, and mapping rows to and from the lifecycle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from statemachine.core.machine import Lifecycle, Record
from statemachine.store.models import Mailbox, StateTransition, User


class UnknownMailboxError(LookupError):
    """No mailbox has this id."""

    def __init__(self, mailbox_id: int) -> None:
        super().__init__(f"no mailbox with id {mailbox_id}")
        self.mailbox_id = mailbox_id


@dataclass(frozen=True)
class Lease:
    """A cycle's claim on a mailbox: only the owner may apply an outcome, until `until`."""

    mailbox_id: int
    owner: uuid.UUID
    revision: int
    provider: str
    refresh_token_ciphertext: bytes
    grant_generation: int


async def take_lease(
    conn: AsyncConnection, mailbox_id: int, owner: uuid.UUID, now: datetime, seconds: float,
    *, takeover_from: uuid.UUID | None = None, revision: int | None = None,
) -> Lease | None:  # fmt: skip
    """Lease the mailbox to `owner` unless another live lease holds it (then None).

    With `takeover_from` (a scan's claim), take it over only from that claim, live or not: a job
    whose claim is finished, or was taken by a copy of the same job, gets None and does nothing.
    With `revision`, only while the row is still at that revision: a caller that decided to refresh
    from what it read gets None when another cycle changed the row since (the API's single flight).
    """
    free = or_(Mailbox.lease_until.is_(None), Mailbox.lease_until <= now)
    unchanged = Mailbox.revision == revision if revision is not None else true()
    statement = (
        update(Mailbox)
        .where(
            Mailbox.id == mailbox_id,
            free if takeover_from is None else Mailbox.lease_owner == takeover_from,
            unchanged,
            Mailbox.removed_at.is_(None),  # a removed mailbox has no tokens left to refresh
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
        .returning(Mailbox.revision, Mailbox.provider, Mailbox.refresh_token_ciphertext, Mailbox.grant_generation)
    )
    row = (await conn.execute(statement)).one_or_none()
    if row is None:
        await ensure_exists(conn, mailbox_id)
        return None
    return Lease(mailbox_id, owner, row.revision, row.provider, row.refresh_token_ciphertext, row.grant_generation)


async def ensure_exists(conn: AsyncConnection, mailbox_id: int) -> None:
    if await conn.scalar(select(Mailbox.id).where(Mailbox.id == mailbox_id)) is None:
        raise UnknownMailboxError(mailbox_id)


async def store_rotated_refresh_token(conn: AsyncConnection, lease: Lease, ciphertext: bytes) -> bool:
    """Keep a newly issued refresh token at once (RFC 9700 §4.14.2), while our lease holds and the grant we
    refreshed is still the mailbox's: a reconnect's newer grant always wins over an old grant's rotated token."""
    statement = (
        update(Mailbox)
        .where(
            Mailbox.id == lease.mailbox_id,
            Mailbox.lease_owner == lease.owner,
            Mailbox.grant_generation == lease.grant_generation,
        )
        .values(refresh_token_ciphertext=ciphertext)
        .returning(Mailbox.id)
    )
    return (await conn.execute(statement)).scalar_one_or_none() is not None


async def lock_mailbox(session: AsyncSession, mailbox_id: int) -> Mailbox:
    """Load the mailbox row with FOR UPDATE, so one event at a time changes it."""
    mailbox = await session.get(Mailbox, mailbox_id, with_for_update=True, populate_existing=True)
    if mailbox is None:
        raise UnknownMailboxError(mailbox_id)
    return mailbox


async def owner_of(session: AsyncSession, mailbox: Mailbox) -> User:
    user = await session.get(User, mailbox.user_id)
    assert user is not None  # the foreign key guarantees it
    return user


# Lifecycle field -> mailbox column: the one place that says how the machine's model is persisted.
LIFECYCLE_COLUMNS = {
    "state": "state",
    "attempt_count": "token_refresh_attempt_count",
    "config_failure_count": "config_failure_count",
    "failed_at": "token_refresh_failed_at",
    "last_error": "token_refresh_error",
    "failure_kind": "failure_kind",
    "user_notified": "user_notified",
    "episode": "episode",
    "next_refresh_at": "next_refresh_at",
}


def lifecycle_of(mailbox: Mailbox) -> Lifecycle:
    return Lifecycle(**{field: getattr(mailbox, column) for field, column in LIFECYCLE_COLUMNS.items()})


def write_lifecycle(mailbox: Mailbox, lifecycle: Lifecycle, now: datetime) -> None:
    """Copy the machine's result onto the row; the caller's transaction persists it."""
    if mailbox.state != lifecycle.state:
        mailbox.state_changed_at = now
    for field, column in LIFECYCLE_COLUMNS.items():
        setattr(mailbox, column, getattr(lifecycle, field))
    mailbox.is_active = lifecycle.is_active
    mailbox.revision += 1
    mailbox.updated_at = now


def history_rows(mailbox_id: int, records: list[Record]) -> list[StateTransition]:
    return [
        StateTransition(
            mailbox_id=mailbox_id,
            event=r.event,
            from_state=r.from_state,
            to_state=r.to_state,
            reason=r.reason,
            error_code=r.error_code,
            actor=r.actor,
            attempt=r.attempt,
            at=r.at,
        )
        for r in records
    ]
