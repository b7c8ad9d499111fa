"""One rule for a zero or negative `expires_in`, whichever way the access token comes in.

A refresh, a reconnect and a bulk import each store the token with no expiry time ("unknown") and
plan the next refresh as for a token of the default lifetime; none of them fails or stores a past time.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import respx
from sqlalchemy import select

from statemachine.services.cycle import run_cycle
from statemachine.services.importer import import_mailboxes
from statemachine.services.reconnect import complete_reconnect
from statemachine.services.runtime import Runtime
from statemachine.store.models import Mailbox
from tests.factories import add_mailbox

ACCESS_TOKEN = "ya29.access-SECRET"
OWNER, ADDRESS = "owner@example.test", "ana@gmail.test"


@dataclass
class Consent:
    expires_in: int | None
    access_token: str = ACCESS_TOKEN
    refresh_token: str | None = "1//new-SECRET"
    subject: str | None = "sub-ana"
    email: str | None = ADDRESS
    email_verified: bool | None = True
    scope: str | None = None


async def by_refresh(runtime: Runtime, provider: respx.Route, expires_in: int) -> int:
    provider.return_value = httpx.Response(
        200, json={"access_token": ACCESS_TOKEN, "expires_in": expires_in, "token_type": "Bearer"}
    )
    mailbox_id = await add_mailbox(runtime, "1//refresh-SECRET")
    assert (await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")).status == "refreshed"
    return mailbox_id


async def by_reconnect(runtime: Runtime, provider: respx.Route, expires_in: int) -> int:
    mailbox_id = await add_mailbox(runtime, "1//old-SECRET")
    async with runtime.sessionmaker() as session:
        user_id = await session.scalar(select(Mailbox.user_id).where(Mailbox.id == mailbox_id))
    assert user_id is not None
    grant = Consent(expires_in=expires_in)
    result = await complete_reconnect(
        runtime.sessionmaker, runtime.cipher, runtime.events, mailbox_id, user_id, grant, f"user:{OWNER}"
    )
    assert result.accepted
    return mailbox_id


async def by_import(runtime: Runtime, provider: respx.Route, expires_in: int) -> int:
    line = json.dumps(
        {"user": OWNER, "provider": "google", "address": ADDRESS, "refresh_token": "1//imported-SECRET",
         "access_token": ACCESS_TOKEN, "expires_in": expires_in}
    )  # fmt: skip
    report = await import_mailboxes(
        runtime.sessionmaker, [line], runtime.cipher, runtime.settings.policy, lambda: datetime.now(UTC)
    )
    assert (report.imported, report.problems) == (1, [])
    async with runtime.sessionmaker() as session:
        mailbox_id = await session.scalar(select(Mailbox.id).where(Mailbox.address == ADDRESS))
    assert mailbox_id is not None
    return mailbox_id


EntryPoint = Callable[[Runtime, respx.Route, int], Awaitable[int]]


@pytest.mark.parametrize("expires_in", [0, -30])
@pytest.mark.parametrize("store", [by_refresh, by_reconnect, by_import], ids=["refresh", "reconnect", "import"])
async def test_a_non_positive_expires_in_means_an_unknown_lifetime_everywhere(
    runtime: Runtime, provider: respx.Route, store: EntryPoint, expires_in: int
) -> None:
    before = datetime.now(UTC)
    mailbox_id = await store(runtime, provider, expires_in)
    after = datetime.now(UTC)
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
    assert mailbox is not None
    assert mailbox.access_token_ciphertext is not None
    assert runtime.cipher.decrypt(mailbox.access_token_ciphertext, mailbox_id=mailbox_id, role="access") == ACCESS_TOKEN
    assert mailbox.access_token_expires_at is None
    policy = runtime.settings.policy  # jitter 1 plans the earliest refresh, jitter 0 the latest
    assert mailbox.next_refresh_at is not None
    assert (
        policy.next_refresh_at(before, None, 1.0) <= mailbox.next_refresh_at <= policy.next_refresh_at(after, None, 0.0)
    )
