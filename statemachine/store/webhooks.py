"""The webhook outbox: events written in the transaction of the change they report.

As with the email outbox (DESIGN.md "One transaction per event"), the delivery rows commit or roll
back with the history row, the state change or the incident that causes them: no event without its
change, none lost when a worker dies. Nothing is written while no endpoint subscribes to the event
type, so a Tokenwarden without webhooks pays one small query per state change. jobs/webhooks.py sends them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.machine import Record
from statemachine.store.models import WEBHOOK_SEQUENCE, Mailbox, User, WebhookDelivery, WebhookEndpoint

RETRY_WINDOW = timedelta(days=1)
STATE_CHANGED, CONNECTED, REMOVED = "mailbox.state_changed", "mailbox.connected", "mailbox.removed"
INCIDENT_OPENED, INCIDENT_CLOSED = "provider_incident.opened", "provider_incident.closed"


@dataclass(frozen=True)
class MailboxChange:
    """The `data` of a mailbox event, less its `sequence` (taken when the event is written)."""

    mailbox_id: int
    user_email: str
    address: str
    provider: str
    from_state: str | None
    to_state: str
    event: str
    reason: str
    at: datetime


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def event_body(event_type: str, data: dict[str, Any], at: datetime) -> str:
    """The exact bytes every attempt sends (and signs)."""
    plain = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
    return json.dumps({"type": event_type, "timestamp": at.isoformat(), "data": plain}, separators=(",", ":"))


async def subscribers(session: AsyncSession, event_type: str) -> list[int]:
    statement = select(WebhookEndpoint.id).where(
        WebhookEndpoint.events.contains([event_type]), WebhookEndpoint.disabled_at.is_(None)
    )
    return list((await session.scalars(statement.order_by(WebhookEndpoint.id))).all())


def _rows(endpoints: Sequence[int], event_type: str, body: str, at: datetime, **columns: Any) -> list[dict[str, Any]]:
    message_id = new_message_id()
    return [
        {"endpoint_id": endpoint_id, "message_id": message_id, "type": event_type, "body": body,
         "give_up_at": at + RETRY_WINDOW, **columns}
        for endpoint_id in endpoints
    ]  # fmt: skip


async def queue_mailbox_events(session: AsyncSession, event_type: str, changes: Sequence[MailboxChange]) -> int:
    """One event per change for every subscribed endpoint, each with the mailbox's next sequence number.

    The sequence is taken here, under the caller's lock on the mailbox row (or for a row it has just
    inserted), so it increases per mailbox in the order the changes commit.
    """
    endpoints = await subscribers(session, event_type) if changes else []
    if not endpoints:
        return 0
    numbers = select(WEBHOOK_SEQUENCE.next_value()).select_from(func.generate_series(1, len(changes)))
    rows = []
    for change, sequence in zip(changes, (await session.scalars(numbers)).all(), strict=True):
        data = {**asdict(change), "sequence": sequence}
        body = event_body(event_type, data, change.at)
        rows += _rows(endpoints, event_type, body, change.at, mailbox_id=change.mailbox_id, sequence=sequence)
    await session.execute(insert(WebhookDelivery), rows)
    return len(rows)


def announced(records: Sequence[Record]) -> list[Record]:
    """The history rows a webhook announces: those that change the state (a reconnect always counts) and removals."""
    return [r for r in records if r.from_state != r.to_state or r.event in ("reconnected", "removed")]


async def queue_history(session: AsyncSession, mailbox: Mailbox, user_email: str, records: Sequence[Record]) -> int:
    """`mailbox.removed` for a removal, `mailbox.state_changed` for every other announced history row."""
    queued = 0
    for event_type, wanted in ((REMOVED, True), (STATE_CHANGED, False)):
        changes = [
            MailboxChange(mailbox.id, user_email, mailbox.address, mailbox.provider, r.from_state, r.to_state,
                          r.event, r.reason, r.at)
            for r in announced(records)
            if (r.event == "removed") == wanted
        ]  # fmt: skip
        queued += await queue_mailbox_events(session, event_type, changes)
    return queued


async def queue_connected(session: AsyncSession, mailbox_ids: Sequence[int]) -> int:
    """`mailbox.connected` for mailboxes just inserted in this transaction (CLI add, import, connect session)."""
    if not mailbox_ids or not await subscribers(session, CONNECTED):
        return 0
    columns = (Mailbox.id, User.email, Mailbox.address, Mailbox.provider, Mailbox.state)
    statement = select(*columns).join(User, User.id == Mailbox.user_id).where(Mailbox.id.in_(mailbox_ids))
    now = datetime.now(UTC)
    changes = [
        MailboxChange(row.id, row.email, row.address, row.provider, None, row.state, "connected", "connected", now)
        for row in await session.execute(statement.order_by(Mailbox.id))
    ]
    return await queue_mailbox_events(session, CONNECTED, changes)


async def queue_incident(
    session: AsyncSession, *, incident_id: int, provider: str, cause: str, code: str | None, opened_at: datetime,
    closed_at: datetime | None = None,
) -> int:  # fmt: skip
    """`provider_incident.opened` or `.closed`, in the transaction that opened or closed it."""
    event_type = INCIDENT_OPENED if closed_at is None else INCIDENT_CLOSED
    endpoints = await subscribers(session, event_type)
    if not endpoints:
        return 0
    data = {"incident_id": incident_id, "provider": provider, "cause": cause, "code": code,
            "opened_at": opened_at, "closed_at": closed_at}  # fmt: skip
    at = closed_at or opened_at
    await session.execute(insert(WebhookDelivery), _rows(endpoints, event_type, event_body(event_type, data, at), at))
    return len(endpoints)


DELIVERY_COLUMNS = (
    WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.type, WebhookDelivery.mailbox_id,
    WebhookDelivery.sequence, WebhookDelivery.status, WebhookDelivery.attempts, WebhookDelivery.last_error,
    WebhookDelivery.message_id, WebhookDelivery.created_at, WebhookDelivery.delivered_at,
)  # fmt: skip


async def list_deliveries(session: AsyncSession, *, failed: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
    """Newest first, JSON-ready (the `tokenwarden webhooks deliveries --json` contract); never the body."""
    statement = select(*DELIVERY_COLUMNS).order_by(WebhookDelivery.id.desc()).limit(limit)
    if failed:
        statement = statement.where(WebhookDelivery.status == "failed")
    rows = await session.execute(statement)
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r._mapping.items()} for r in rows]


async def redeliver(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Send a delivery again (the same id and body), with a fresh retry window; False when there is none."""
    statement = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(status="pending", next_attempt_at=now, give_up_at=now + RETRY_WINDOW, locked_until=None)
        .returning(WebhookDelivery.id)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None
