"""Outbox rows: rendered emails written in the transaction that changed the state.

The dedupe key is (mailbox, failure episode, kind), so a job that runs twice, or a mailbox that is
disconnected again in the same episode after an operator's retry, never emails twice. The
Message-ID is fixed per row, so a resend after a crash is recognisable as the same mail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.errors import Verdict
from statemachine.core.states import EmailKind
from statemachine.mail.emails import EmailContext, render_email
from statemachine.store.models import Mailbox, Notification, User


@dataclass(frozen=True)
class EmailFacts:
    """What the email needs to know beyond the mailbox row."""

    reconnect_url: str
    verdict: Verdict | None
    next_attempt_at: datetime | None


def dedupe_key(mailbox_id: int, episode: int, kind: EmailKind, occasion: str | None = None) -> str:
    """One email per (mailbox, episode, kind); `occasion` tells apart repeated kinds such as reminders ("1d")."""
    key = f"mailbox:{mailbox_id}:episode:{episode}:{kind.value}"
    return f"{key}:{occasion}" if occasion else key


def message_id(mail_domain: str) -> str:
    return f"<tokenwarden.{uuid.uuid4().hex}@{mail_domain}>"


def email_row(
    kind: EmailKind, context: EmailContext, *, mailbox_id: int, episode: int, recipient: str, mail_domain: str,
    occasion: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The outbox values of one email, rendered now, with its dedupe key and a Message-ID of its own."""
    rendered = render_email(kind, context)
    return {
        "mailbox_id": mailbox_id,
        "kind": kind.value,
        "recipient": recipient,
        "subject": rendered.subject,
        "body_text": rendered.text,
        "body_html": rendered.html,
        "dedupe_key": dedupe_key(mailbox_id, episode, kind, occasion),
        "message_id": message_id(mail_domain),
    }


def notification_values(
    mailbox: Mailbox, user: User, kind: EmailKind, facts: EmailFacts, mail_domain: str
) -> dict[str, Any]:
    """The outbox values of an email about a state change of `mailbox`."""
    context = EmailContext(
        mailbox_address=mailbox.address,
        provider=mailbox.provider,
        recipient_name=user.name,
        reason=facts.verdict.reason if facts.verdict else None,
        reconnect_url=facts.reconnect_url,
        next_attempt_at=facts.next_attempt_at,
        admin=bool(facts.verdict and facts.verdict.admin),
    )
    return email_row(
        kind, context, mailbox_id=mailbox.id, episode=mailbox.episode, recipient=user.email, mail_domain=mail_domain
    )


async def queue(session: AsyncSession, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Insert outbox rows, skipping any whose dedupe key exists; return (id, kind) of those actually queued."""
    queued = []
    for row in rows:
        statement = (
            insert(Notification).values(**row).on_conflict_do_nothing(index_elements=["dedupe_key"])
        ).returning(Notification.id, Notification.kind)
        found = (await session.execute(statement)).one_or_none()
        if found is not None:
            queued.append((found.id, found.kind))
    return queued


async def requeue_failed(session: AsyncSession, since: datetime | None = None) -> int:
    """Put failed emails (queued at or after `since`) back to pending with fresh attempts, due now.

    For after a delivery problem was fixed (an SMTP password, a relay's block). The worker re-checks each
    one when it sends, so a reminder whose mailbox is back is still not sent; the Message-ID stays the same.
    """
    statement = (
        update(Notification)
        .where(Notification.status == "failed")
        .values(status="pending", attempts=0, last_error=None, next_attempt_at=func.now(), locked_until=None)
    )
    if since is not None:
        statement = statement.where(Notification.created_at >= since)
    result = await session.execute(statement.returning(Notification.id))
    return len(result.scalars().all())
