"""DELETE /v1/mailboxes/{id}: revoked at the (sandbox) provider, tokens erased, history kept, revived by a reconnect."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from devkit.serving import RunningServer
from statemachine.services.reconnect import complete_reconnect
from statemachine.services.removal import attempt_revocation
from statemachine.store import queries
from statemachine.store.models import Revocation
from tests.database import CLIENT_ID, CLIENT_SECRET
from tests.web.support import free_port, now, row
from tests.web.v1.conftest import KEY_NAME, Api
from tests.web.v1.support import granted_mailbox
from web.app import create_app
from web.pages import WebContext

REFRESH_TOKEN = "1//refresh-SECRET-ana@gmail.test"


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {"GOOGLE_TOKEN_URL": f"{sandbox.url}/token", "GOOGLE_REVOKE_URL": f"{sandbox.url}/revoke"}


async def still_granted(google: httpx.AsyncClient) -> bool:
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET}  # fmt: skip
    return (await google.post("/token", data=form)).status_code == 200


async def events(web: WebContext, mailbox_id: int) -> list[tuple[str, str]]:
    async with web.runtime.sessionmaker() as session:
        return [(r["event"], r["actor"]) for r in await queries.history(session, mailbox_id)]


async def revocation(web: WebContext) -> Revocation:
    async with web.runtime.sessionmaker() as session:
        return (await session.scalars(select(Revocation))).one()


async def test_a_removed_mailbox_is_revoked_erased_kept_in_history_and_left_out_of_lists(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    client = api()
    assert (await client.delete(f"/v1/mailboxes/{mailbox_id}")).status_code == 204
    assert not await still_granted(google)
    mailbox = await row(web, mailbox_id)
    assert (mailbox.state, mailbox.is_active, mailbox.next_refresh_at) == ("disconnected", False, None)
    assert mailbox.removed_at is not None
    assert (mailbox.refresh_token_ciphertext, mailbox.access_token_ciphertext) == (b"", None)
    assert await events(web, mailbox_id) == [("removed", f"api-key:{KEY_NAME}"), ("grant_revoked", "tokenwarden")]
    done = await revocation(web)
    assert (done.status, done.token_ciphertext) == ("revoked", None)
    shown = (await client.get(f"/v1/mailboxes/{mailbox_id}")).json()
    assert shown["reason"] == "Removed by the host app."
    assert (await client.get("/v1/mailboxes")).json()["data"] == []
    assert len((await client.get("/v1/mailboxes?include_removed=true")).json()["data"]) == 1
    assert (await client.post(f"/v1/mailboxes/{mailbox_id}/access-token")).status_code == 409
    assert (await client.delete(f"/v1/mailboxes/{mailbox_id}")).status_code == 204  # again: nothing more happens
    assert len(await events(web, mailbox_id)) == 2
    assert (await client.delete("/v1/mailboxes/999")).status_code == 404


async def test_a_revocation_that_fails_is_retried_by_the_worker_then_given_up_with_the_token_erased(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google)
    unreachable = replace(web.runtime.settings.providers["google"], revoke_url=f"http://127.0.0.1:{free_port()}/revoke")
    down = replace(web.runtime.settings, providers={**web.runtime.settings.providers, "google": unreachable})
    web = WebContext(replace(web.runtime, settings=down), web.redis, web.signing)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(down, context=web)), base_url=web.base_url,
        headers=api().headers,
    ) as client:  # fmt: skip
        assert (await client.delete(f"/v1/mailboxes/{mailbox_id}")).status_code == 204
    waiting = await revocation(web)
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.token_ciphertext is not None
    assert REFRESH_TOKEN.encode() not in waiting.token_ciphertext
    assert await still_granted(google)
    rt = web.runtime
    async with rt.sessionmaker() as session, session.begin():
        await session.execute(update(Revocation).values(next_attempt_at=now(), give_up_at=now() - timedelta(1)))
    result = await attempt_revocation(rt.sessionmaker, rt.http, rt.cipher, down, waiting.id, now())
    assert result == "failed"
    given_up = await revocation(web)
    assert (given_up.status, given_up.token_ciphertext) == ("failed", None)
    assert [event for event, _ in await events(web, mailbox_id)] == ["removed", "revocation_failed"]


@dataclass
class Consent:
    access_token: str = "ya29.new"
    expires_in: int | None = 3600
    refresh_token: str | None = "1//new-grant"
    subject: str | None = "104400000000000000001"
    email: str | None = "ana@gmail.test"
    email_verified: bool | None = True
    scope: str | None = None


async def test_connecting_a_removed_mailbox_again_revives_it(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google)
    assert (await api().delete(f"/v1/mailboxes/{mailbox_id}")).status_code == 204
    user_id = (await row(web, mailbox_id)).user_id
    rt = web.runtime
    result = await complete_reconnect(rt.sessionmaker, rt.cipher, rt.events, mailbox_id, user_id, Consent(), "user")
    assert result.accepted
    mailbox = await row(web, mailbox_id)
    assert (mailbox.state, mailbox.removed_at) == ("healthy", None)
    assert rt.cipher.decrypt(mailbox.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh") == "1//new-grant"
