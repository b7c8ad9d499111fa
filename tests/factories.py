"""Test data through the same code paths the CLI uses."""

from __future__ import annotations

from datetime import UTC, datetime

from statemachine.services import accounts
from statemachine.services.runtime import Runtime


async def add_user(runtime: Runtime, email: str = "owner@example.test", name: str | None = "Ana") -> int:
    async with runtime.sessionmaker() as session, session.begin():
        return (await accounts.add_user(session, email, name)).id


async def add_mailbox(
    runtime: Runtime,
    refresh_token: str,
    *,
    user: str = "owner@example.test",
    address: str = "ana@gmail.test",
    provider: str = "google",
) -> int:
    """Connect a mailbox for `user` (created when missing); returns the mailbox id."""
    mailbox = accounts.new_mailbox(user=user, provider=provider, address=address, refresh_token=refresh_token)
    async with runtime.sessionmaker() as session, session.begin():
        users = await accounts.user_ids(session, {mailbox.user_email}, create=True)
        (mailbox_id,) = await accounts.reserve_ids(session, 1)
        row = accounts.row_values(
            mailbox, mailbox_id, users[mailbox.user_email], runtime.cipher, runtime.settings.policy,
            datetime.now(UTC), 0.0,
        )  # fmt: skip
        await accounts.insert_mailboxes(session, [row])
    return mailbox_id
