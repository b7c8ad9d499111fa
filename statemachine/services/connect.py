"""Connecting a mailbox from a consent grant: a new mailbox, or a reconnect of one the user already has.

Used by connect sessions (the host app's link and the dashboard's "Connect" button). An address the
user already has (a removed one included) is reconnected through `complete_reconnect`, so the
same-account rule applies; a mailbox named by the session must be the consenting account's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from statemachine.core.secrets import TokenCipher
from statemachine.services import accounts
from statemachine.services.reconnect import ConsentGrant, ReconnectError, complete_reconnect
from statemachine.services.unit_of_work import EventContext
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox


@dataclass(frozen=True)
class Connected:
    """`status` is connected (new), reconnected (an existing mailbox, same account) or rejected (another account)."""

    status: str
    mailbox_id: int


async def connect_mailbox(
    sessionmaker: Sessionmaker, cipher: TokenCipher, events: EventContext, *, user_id: int, user_email: str,
    provider: str, grant: ConsentGrant, actor: str, mailbox_id: int | None = None,
) -> Connected:  # fmt: skip
    """Raise ReconnectError when the grant cannot be used (no refresh token, no verified email)."""
    if not grant.refresh_token:
        raise ReconnectError("the provider did not issue a refresh token; please try again")
    if mailbox_id is None:
        if not (grant.email and grant.email_verified):
            raise ReconnectError("the provider did not confirm the mailbox's email address")
        address = grant.email.strip().lower()
        mailbox_id = await _existing(sessionmaker, user_id, provider, address)
        if mailbox_id is None:
            new_id = await _insert(sessionmaker, cipher, events, user_id, user_email, provider, address, grant)
            if new_id is not None:
                return Connected("connected", new_id)
            mailbox_id = await _existing(sessionmaker, user_id, provider, address)  # connected meanwhile
            assert mailbox_id is not None
    result = await complete_reconnect(sessionmaker, cipher, events, mailbox_id, user_id, grant, actor)
    return Connected("reconnected" if result.accepted else "rejected", mailbox_id)


async def _existing(sessionmaker: Sessionmaker, user_id: int, provider: str, address: str) -> int | None:
    statement = select(Mailbox.id).where(
        Mailbox.user_id == user_id, Mailbox.provider == provider, Mailbox.address == address
    )
    async with sessionmaker() as session:
        return await session.scalar(statement)


async def _insert(
    sessionmaker: Sessionmaker, cipher: TokenCipher, events: EventContext, user_id: int, user_email: str,
    provider: str, address: str, grant: ConsentGrant,
) -> int | None:  # fmt: skip
    """The new mailbox's id (its `mailbox.connected` webhook in the same transaction), or None if it exists."""
    assert grant.refresh_token is not None
    new = accounts.new_mailbox(
        user=user_email, provider=provider, address=address, refresh_token=grant.refresh_token,
        access_token=grant.access_token, expires_in=grant.expires_in,
    )  # fmt: skip
    async with sessionmaker() as session, session.begin():
        (mailbox_id,) = await accounts.reserve_ids(session, 1)
        row = accounts.row_values(new, mailbox_id, user_id, cipher, events.policy, datetime.now(UTC), random.random())
        row["provider_subject"] = grant.subject
        row["granted_scope"] = grant.scope
        row["last_refreshed_at"] = datetime.now(UTC)
        inserted = await accounts.insert_mailboxes(session, [row])
    return mailbox_id if inserted else None
