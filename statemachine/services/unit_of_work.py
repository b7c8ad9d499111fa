"""Apply one event to one mailbox in one transaction: lock, fire, update, history, outbox.

The caller owns the transaction (`async with session.begin()`); everything written here commits or
rolls back together, so there is never an email without its state change, nor a state change
without its history row (docs/transactions.md, "One transaction per event").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.machine import Lifecycle, Occurrence, Record, fire
from statemachine.core.policy import Policy
from statemachine.core.states import EmailKind, Event
from statemachine.services.settings import Settings
from statemachine.store import outbox, repository, webhooks
from statemachine.store.models import Mailbox


@dataclass(frozen=True)
class EventContext:
    """The configuration an event needs beyond the row: the policy and how to build links and mail."""

    policy: Policy
    base_url: str
    mail_domain: str
    user_emails: bool = True  # TOKENWARDEN_USER_EMAILS=off: the host app tells its users itself

    @classmethod
    def from_settings(cls, settings: Settings) -> EventContext:
        address = settings.mail_from.rsplit("<", 1)[-1].rstrip(">")
        return cls(settings.policy, settings.base_url, address.rpartition("@")[2] or "localhost", settings.user_emails)

    def reconnect_url(self, mailbox_id: int) -> str:
        return f"{self.base_url}/mailboxes/{mailbox_id}/reconnect"


@dataclass(frozen=True)
class Outcome:
    """What one event did: for the CLI's report, logs and tests."""

    mailbox_id: int
    event: str
    from_state: str
    to_state: str
    records: tuple[Record, ...]
    emails: tuple[str, ...]
    notifications: tuple[int, ...]  # the outbox rows of `emails`, to hand to delivery once committed
    next_refresh_at: datetime | None
    error: str | None
    attempt: int  # failed cycles in the current episode after this event (0 once healthy)


async def apply_event(
    session: AsyncSession, mailbox: Mailbox, event: Event, occurrence: Occurrence, context: EventContext
) -> Outcome:
    """Fire `event` on a row locked by the caller and stage every effect in the session."""
    lifecycle = repository.lifecycle_of(mailbox)
    from_state = mailbox.state
    fire(lifecycle, event, occurrence, context.policy)
    repository.write_lifecycle(mailbox, lifecycle, occurrence.at)
    session.add_all(repository.history_rows(mailbox.id, lifecycle.records))
    await session.flush()
    await _queue_webhooks(session, mailbox, lifecycle.records)
    queued = await _queue_emails(session, mailbox, lifecycle.emails, occurrence, context)
    return outcome_of(mailbox.id, event, from_state, lifecycle, queued)


def outcome_of(
    mailbox_id: int, event: Event, from_state: str, lifecycle: Lifecycle, queued: Sequence[tuple[int, str]] = ()
) -> Outcome:
    """The Outcome of a fired lifecycle, once written; `queued` are its outbox rows (id, kind)."""
    return Outcome(
        mailbox_id=mailbox_id,
        event=event.value,
        from_state=from_state,
        to_state=lifecycle.state,
        records=tuple(lifecycle.records),
        emails=tuple(kind for _, kind in queued),
        notifications=tuple(notification_id for notification_id, _ in queued),
        next_refresh_at=lifecycle.next_refresh_at,
        error=lifecycle.last_error,
        attempt=lifecycle.attempt_count + lifecycle.config_failure_count,
    )


async def _queue_webhooks(session: AsyncSession, mailbox: Mailbox, records: list[Record]) -> None:
    """The webhooks of the history rows that change the state (or remove the mailbox), in this same transaction."""
    if webhooks.announced(records):
        user = await repository.owner_of(session, mailbox)
        await webhooks.queue_history(session, mailbox, user.email, records)


async def _queue_emails(
    session: AsyncSession, mailbox: Mailbox, kinds: list[EmailKind], occurrence: Occurrence, context: EventContext
) -> list[tuple[int, str]]:
    if not kinds or not context.user_emails:
        return []
    user = await repository.owner_of(session, mailbox)
    facts = outbox.EmailFacts(context.reconnect_url(mailbox.id), occurrence.verdict, mailbox.next_refresh_at)
    rows = [outbox.notification_values(mailbox, user, kind, facts, context.mail_domain) for kind in kinds]
    return await outbox.queue(session, rows)
