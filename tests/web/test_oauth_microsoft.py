"""Reconnecting a Microsoft mailbox against the sandbox Microsoft over real HTTP.

The account check compares the id_token's tenant (`tid`) and object id (`oid`), never the email: Entra lets a
tenant set any email, so trusting it would let one account take over another's mailbox ("nOAuth").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devkit.serving import RunningServer
from statemachine.store import queries
from tests.web.support import SignIn, mailbox, row
from tests.web.test_oauth import start
from web.pages import WebContext

TID, OTHER_TID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
OID, OTHER_OID = "00000000-0000-0000-66f3-3332eca7ea81", "00000000-0000-0000-1234-56789abcdef0"
ADDRESS = "ana@contoso.test"
CALLBACK = "https://tokenwarden.test/auth/microsoft/callback"


@pytest.fixture
def web_overrides(microsoft_sandbox: RunningServer) -> dict[str, str]:
    base = f"{microsoft_sandbox.url}/common/oauth2/v2.0"
    return {"MICROSOFT_AUTH_URL": f"{base}/authorize", "MICROSOFT_TOKEN_URL": f"{base}/token"}


@pytest.fixture
async def ms(microsoft_sandbox: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=microsoft_sandbox.url, timeout=5) as client:
        yield client


async def sign_in_as(ms: httpx.AsyncClient, authorize_url: str, *, email: str, tid: str, oid: str) -> str:
    """Sign in at the sandbox Microsoft as that account; returns our callback path with its query."""
    (await ms.post("/_sandbox/accounts", json={"email": email, "sub": oid, "tid": tid})).raise_for_status()
    parts = urlsplit(authorize_url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (await ms.get(parts.path, params=params)).status_code == 200  # the consent page
    response = await ms.post(parts.path, data={**params, "account": oid})
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return f"{back.path}?{back.query}"


async def disconnected(web: WebContext, subject: str | None = f"{TID}/{OID}") -> int:
    return await mailbox(
        web, address=ADDRESS, provider="microsoft", state="disconnected", provider_subject=subject,
        token_refresh_error="invalid_grant/AADSTS50173: Microsoft ended the connection", failure_kind="permanent",
    )  # fmt: skip


async def history(web: WebContext, mailbox_id: int) -> list[dict[str, object]]:
    async with web.runtime.sessionmaker() as session:
        return await queries.history(session, mailbox_id)


async def test_the_consent_url_names_the_tenant_the_scopes_and_the_account(
    web: WebContext, sign_in: SignIn, ms: httpx.AsyncClient
) -> None:
    client = await sign_in()
    url = await start(client, await disconnected(web))
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/common/oauth2/v2.0/authorize"
    assert {"openid", "profile", "offline_access"} <= set(params["scope"].split())
    assert (params["prompt"], params["login_hint"], params["code_challenge_method"]) == (
        "select_account",
        ADDRESS,
        "S256",
    )


async def test_the_same_tenant_and_object_id_is_accepted_even_with_a_new_email(
    web: WebContext, sign_in: SignIn, ms: httpx.AsyncClient
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    back = await sign_in_as(ms, await start(client, mailbox_id), email="ana.renamed@contoso.test", tid=TID, oid=OID)
    callback = await client.get(back)
    assert (callback.status_code, callback.headers["location"]) == (303, "/")
    assert "Outlook / Microsoft 365 reconnected: ana@contoso.test is working again." in (await client.get("/")).text
    assert (await row(web, mailbox_id)).state == "healthy"
    assert [r["event"] for r in await history(web, mailbox_id)] == ["reconnected"]


@pytest.mark.parametrize(("tid", "oid"), [(TID, OTHER_OID), (OTHER_TID, OID)], ids=["other-oid", "other-tid"])
async def test_the_same_email_from_another_account_is_refused(
    web: WebContext, sign_in: SignIn, ms: httpx.AsyncClient, tid: str, oid: str
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    page = await client.get(await sign_in_as(ms, await start(client, mailbox_id), email=ADDRESS, tid=tid, oid=oid))
    assert page.status_code == 403
    assert "That was a different account" in page.text
    mailbox_row = await row(web, mailbox_id)
    assert (mailbox_row.state, mailbox_row.provider_subject) == ("disconnected", f"{TID}/{OID}")
    token = web.runtime.cipher.decrypt(mailbox_row.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    assert token == "1//refresh-SECRET-" + ADDRESS
    rows = await history(web, mailbox_id)
    assert [r["event"] for r in rows] == ["reconnect_rejected"]


async def test_a_mailbox_whose_account_is_not_known_yet_is_refused_with_the_reason(
    web: WebContext, sign_in: SignIn, ms: httpx.AsyncClient
) -> None:
    """Added by the CLI or an import and never refreshed: no tid/oid to compare, and the email proves nothing."""
    client = await sign_in()
    mailbox_id = await disconnected(web, subject=None)
    page = await client.get(await sign_in_as(ms, await start(client, mailbox_id), email=ADDRESS, tid=TID, oid=OID))
    assert page.status_code == 409
    assert "We cannot tell which account this mailbox belongs to yet" in page.text
    assert "first successful refresh" in page.text
    assert (await row(web, mailbox_id)).provider_subject is None
    rows = await history(web, mailbox_id)
    assert [r["event"] for r in rows] == ["reconnect_rejected"]
    assert "is not known yet" in str(rows[0]["reason"])
