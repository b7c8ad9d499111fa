"""Read models for operators: mailboxes, their history and the outbox, as JSON-ready dicts.

The CLI's `--json` output and the web API share these, so the field names are a stable contract.
No token or ciphertext column is ever selected here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.models import Mailbox, Notification, StateTransition, User
from statemachine.store.repository import UnknownMailboxError

MAILBOX_COLUMNS = (
    Mailbox.id,
    User.email.label("user"),
    Mailbox.address,
    Mailbox.provider,
    Mailbox.state,
    Mailbox.is_active,
    Mailbox.token_refresh_attempt_count,
    Mailbox.token_refresh_failed_at,
    Mailbox.token_refresh_error,
    Mailbox.failure_kind,
    Mailbox.next_refresh_at,
    Mailbox.last_refreshed_at,
    Mailbox.access_token_expires_at,
    Mailbox.state_changed_at,
    Mailbox.created_at,
)
HISTORY_COLUMNS = (
    StateTransition.id,
    StateTransition.event,
    StateTransition.from_state,
    StateTransition.to_state,
    StateTransition.reason,
    StateTransition.error_code,
    StateTransition.actor,
    StateTransition.attempt,
    StateTransition.at,
)
OUTBOX_COLUMNS = (
    Notification.id,
    Notification.kind,
    Notification.mailbox_id,
    Notification.recipient,
    Notification.subject,
    Notification.status,
    Notification.attempts,
    Notification.last_error,
    Notification.created_at,
    Notification.sent_at,
)


def json_row(row: Any) -> dict[str, Any]:
    """A result row as a JSON-ready dict: times as ISO 8601 text. Every read model's rows go through here."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row._mapping.items()}


def mailboxes_with_owner() -> Select[*tuple[Any, ...]]:
    """MAILBOX_COLUMNS with the owner's email as `user`: the CLI's and the web pages' view of a mailbox."""
    return select(*MAILBOX_COLUMNS).join(User, User.id == Mailbox.user_id)


async def list_mailboxes(session: AsyncSession, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    statement = mailboxes_with_owner().order_by(Mailbox.id).limit(limit)
    if state is not None:
        statement = statement.where(Mailbox.state == state)
    return [json_row(row) for row in await session.execute(statement)]


async def show_mailbox(session: AsyncSession, mailbox_id: int) -> dict[str, Any]:
    statement = mailboxes_with_owner().where(Mailbox.id == mailbox_id)
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise UnknownMailboxError(mailbox_id)
    return json_row(row)


async def history(session: AsyncSession, mailbox_id: int) -> list[dict[str, Any]]:
    await show_mailbox(session, mailbox_id)
    statement = (
        select(*HISTORY_COLUMNS)
        .where(StateTransition.mailbox_id == mailbox_id)
        .order_by(StateTransition.at, StateTransition.id)
    )
    return [json_row(row) for row in await session.execute(statement)]


async def outbox(session: AsyncSession, mailbox_id: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    statement = select(*OUTBOX_COLUMNS).order_by(Notification.id).limit(limit)
    if mailbox_id is not None:
        statement = statement.where(Notification.mailbox_id == mailbox_id)
    return [json_row(row) for row in await session.execute(statement)]


async def mailboxes_by_provider(session: AsyncSession) -> dict[str, int]:
    """How many mailboxes each provider has (check-config's "mailboxes but no client credentials")."""
    rows = await session.execute(select(Mailbox.provider, func.count()).group_by(Mailbox.provider))
    return {provider: count for provider, count in rows}
