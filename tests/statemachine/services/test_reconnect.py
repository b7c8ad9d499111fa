"""Reconnecting stores the new grant only when the consenting account is the mailbox's own."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select

from statemachine.services.reconnect import ReconnectError, complete_reconnect
from statemachine.store import queries
from statemachine.store.models import Mailbox, User
from statemachine.store.repository import UnknownMailboxError
from tests.factories import add_mailbox


@dataclass(frozen=True)
class Grant:
    access_token: str = "ya29.new-SECRET"
    expires_in: int | None = 3599
    refresh_token: str | None = "1//new-SECRET"
    subject: str | None = "sub-ana"
    email: str | None = "ana@gmail.test"
    email_verified: bool | None = True
    scope: str | None = "https://mail.google.com/"


async def owner_id(runtime) -> int:
    async with runtime.sessionmaker() as session:
        return await session.scalar(select(User.id).where(User.email == "owner@example.test"))


async def reconnect(runtime, mailbox_id: int, grant: Grant, user_id: int | None = None):
    user = user_id if user_id is not None else await owner_id(runtime)
    return await complete_reconnect(
        runtime.sessionmaker, runtime.cipher, runtime.events, mailbox_id, user, grant, "user:owner@example.test"
    )


async def test_first_reconnect_by_verified_email_stores_grant_and_subject(runtime) -> None:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    result = await reconnect(runtime, mailbox_id, Grant())
    assert result.accepted
    assert (result.outcome.event, result.outcome.to_state) == ("reconnected", "healthy")
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
    assert mailbox.provider_subject == "sub-ana"
    assert (
        runtime.cipher.decrypt(mailbox.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
        == "1//new-SECRET"
    )


@pytest.mark.parametrize(
    "grant",
    [Grant(email="mallory@gmail.test", subject="sub-mallory"), Grant(email_verified=False), Grant(email=None)],
    ids=["other-account", "unverified-email", "no-email"],
)
async def test_another_account_stores_nothing_and_is_recorded(runtime, grant: Grant) -> None:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    result = await reconnect(runtime, mailbox_id, grant)
    assert not result.accepted
    assert result.expected_account == "ana@gmail.test"
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        rows = await queries.history(session, mailbox_id)
    assert (
        runtime.cipher.decrypt(mailbox.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
        == "1//old-SECRET"
    )
    assert mailbox.provider_subject is None
    assert [r["event"] for r in rows] == ["reconnect_rejected"]
    assert "SECRET" not in rows[0]["reason"]


async def test_once_known_the_subject_decides_even_if_the_email_matches(runtime) -> None:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    await reconnect(runtime, mailbox_id, Grant())
    result = await reconnect(runtime, mailbox_id, Grant(subject="sub-impostor"))
    assert not result.accepted


async def test_another_users_mailbox_is_unknown(runtime) -> None:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    with pytest.raises(UnknownMailboxError):
        await reconnect(runtime, mailbox_id, Grant(), user_id=(await owner_id(runtime)) + 1)


async def test_a_grant_without_refresh_token_is_refused(runtime) -> None:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    with pytest.raises(ReconnectError, match="did not issue a refresh token"):
        await reconnect(runtime, mailbox_id, Grant(refresh_token=None))
