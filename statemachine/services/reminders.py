"""Reminders for disconnected mailboxes (default +1 d, +3 d, +7 d): which one is due, and its outbox row.

Who gets one: a mailbox that is disconnected *now* by failed refreshes and whose owner was emailed
about it. Recovery or a reconnect ends the reminders (only disconnected rows are candidates, and a
new disconnect is a new episode with its own). Operator disconnects get none: the user cannot undo
them, so a "please reconnect" would be noise; we tell the user only what they can fix. Nor while a
provider incident is open for the mailbox's provider: no user emails during an outage (docs/incidents.md).

Each reminder is sent once per episode (the outbox dedupe key carries the occasion, "1d", "3d",
"7d"). Only the latest reminder whose time has come is sent: a worker that was down for a week sends
the 7-day reminder, not three at once; and none once twice the last delay has passed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.states import EmailKind, Event, State
from statemachine.mail.emails import EmailContext, format_utc
from statemachine.services.unit_of_work import EventContext
from statemachine.store import outbox
from statemachine.store.models import Incident, Mailbox, Notification, StateTransition, User

KIND = EmailKind.TOKEN_REFRESH_REMINDER
STALE_FACTOR = 2  # no reminder later than twice the last configured delay
BATCH = 500


def occasion(days: float) -> str:
    """The dedupe-key occasion of a delay: 1 -> "1d", 0.0001 -> "0.0001d"."""
    return f"{days:g}d"


def due_occasion(disconnected_at: datetime, now: datetime, days: Sequence[float], sent: Collection[str]) -> str | None:
    """The reminder to send now, if any: the latest one whose delay has passed, unless already sent."""
    if not days:
        return None
    elapsed = now - disconnected_at
    if elapsed > timedelta(days=max(days) * STALE_FACTOR):
        return None
    passed = [d for d in sorted(days) if elapsed >= timedelta(days=d)]
    if not passed or occasion(passed[-1]) in sent:
        return None
    return occasion(passed[-1])


def ago(elapsed: timedelta) -> str:
    """Plain words for how long ago: "3 days ago", "1 hour ago", "less than a minute ago"."""
    seconds = elapsed.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "less than a minute ago"


@dataclass(frozen=True)
class Candidate:
    """A disconnected mailbox that may be owed a reminder, with what the email shows."""

    mailbox_id: int
    provider: str
    address: str
    episode: int
    disconnected_at: datetime
    next_refresh_at: datetime | None
    recipient: str
    recipient_name: str | None
    reason: str


async def candidates(session: AsyncSession, days: Sequence[float], now: datetime) -> list[Candidate]:
    """Disconnected, notified, within the reminder window, not by an operator, no open incident (no locks)."""
    last = (
        select(StateTransition.event, StateTransition.reason)
        .where(
            StateTransition.mailbox_id == Mailbox.id,
            StateTransition.to_state == State.DISCONNECTED.value,
            StateTransition.from_state != State.DISCONNECTED.value,
        )
        .order_by(StateTransition.at.desc(), StateTransition.id.desc())
        .limit(1)
        .lateral("last_disconnect")
    )
    incident = exists().where(and_(Incident.provider == Mailbox.provider, Incident.status == "open"))
    statement = (
        select(Mailbox, User.email, User.name, last.c.reason)
        .join(User, User.id == Mailbox.user_id)
        .join(last, last.c.event != Event.OPS_DISCONNECT.value)
        .where(
            Mailbox.state == State.DISCONNECTED.value,
            Mailbox.user_notified.is_(True),
            Mailbox.removed_at.is_(None),
            Mailbox.state_changed_at <= now - timedelta(days=min(days)),
            Mailbox.state_changed_at >= now - timedelta(days=max(days) * STALE_FACTOR),
            ~incident,
        )
        .order_by(Mailbox.id)
        .limit(BATCH)
    )
    return [_candidate(row) for row in await session.execute(statement)]


def _candidate(row: Any) -> Candidate:
    mailbox: Mailbox = row.Mailbox
    return Candidate(
        mailbox.id, mailbox.provider, mailbox.address, mailbox.episode, mailbox.state_changed_at,
        mailbox.next_refresh_at, row.email, row.name, row.reason,
    )  # fmt: skip


async def sent_occasions(
    session: AsyncSession, found: Sequence[Candidate], days: Sequence[float]
) -> dict[int, set[str]]:
    """For each candidate, the occasions already in the outbox for its current episode."""
    keys = {
        outbox.dedupe_key(c.mailbox_id, c.episode, KIND, occasion(d)): (c.mailbox_id, occasion(d))
        for c in found
        for d in days
    }
    result: dict[int, set[str]] = {c.mailbox_id: set() for c in found}
    if keys:
        existing = await session.scalars(select(Notification.dedupe_key).where(Notification.dedupe_key.in_(keys)))
        for key in existing:
            mailbox_id, label = keys[key]
            result[mailbox_id].add(label)
    return result


async def lock_unchanged(session: AsyncSession, due: Sequence[tuple[Candidate, str]]) -> set[int]:
    """Lock the rows about to be reminded and keep those still in the same disconnect.

    A refresh cycle applying a recovery right now holds the row lock: skip it (SKIP LOCKED) rather
    than remind a mailbox that is coming back; the next run sees the outcome.
    """
    if not due:
        return set()
    episodes = {c.mailbox_id: (c.episode, c.disconnected_at) for c, _ in due}
    statement = (
        select(Mailbox.id, Mailbox.episode, Mailbox.state_changed_at)
        .where(Mailbox.id.in_(episodes), Mailbox.state == State.DISCONNECTED.value)
        .with_for_update(skip_locked=True)
    )
    rows = await session.execute(statement)
    return {row.id for row in rows if episodes[row.id] == (row.episode, row.state_changed_at)}


def reminder_row(candidate: Candidate, label: str, now: datetime, events: EventContext) -> dict[str, Any]:
    """The outbox values of one reminder, rendered now (the text shows how long ago it happened)."""
    since = f"Disconnected {ago(now - candidate.disconnected_at)}, on {format_utc(candidate.disconnected_at)}."
    context = EmailContext(
        mailbox_address=candidate.address,
        provider=candidate.provider,
        recipient_name=candidate.recipient_name,
        reason=f"{since} {candidate.reason}",
        reconnect_url=events.reconnect_url(candidate.mailbox_id),
        next_attempt_at=candidate.next_refresh_at,
    )
    return outbox.email_row(
        KIND, context, mailbox_id=candidate.mailbox_id, episode=candidate.episode, recipient=candidate.recipient,
        mail_domain=events.mail_domain, occasion=label,
    )  # fmt: skip


async def queue_due_reminders(
    session: AsyncSession, events: EventContext, days: Sequence[float], now: datetime
) -> list[tuple[int, str]]:
    """Write the outbox rows of every reminder due at `now`; return (mailbox id, occasion) of each queued."""
    if not days or not events.user_emails:
        return []
    found = await candidates(session, days, now)
    sent = await sent_occasions(session, found, days)
    due = [(c, label) for c in found if (label := due_occasion(c.disconnected_at, now, days, sent[c.mailbox_id]))]
    still = await lock_unchanged(session, due)
    due = [(c, label) for c, label in due if c.mailbox_id in still]
    queued = []
    for candidate, label in due:
        if await outbox.queue(session, [reminder_row(candidate, label, now, events)]):
            queued.append((candidate.mailbox_id, label))
    return queued
