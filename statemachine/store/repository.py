"""Database access for mailboxes: row locks, and mapping rows to and from the lifecycle (a cycle's lease and
routine outcome: store/cycle_rows.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.machine import Lifecycle, Record
from statemachine.store.models import Mailbox, StateTransition, User


class UnknownMailboxError(LookupError):
    """No mailbox has this id."""

    def __init__(self, mailbox_id: int) -> None:
        super().__init__(f"no mailbox with id {mailbox_id}")
        self.mailbox_id = mailbox_id


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
