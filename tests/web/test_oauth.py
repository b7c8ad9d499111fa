"""The reconnect flow against the sandbox Google over real HTTP: the happy path and every way it can fail.

Each failure must end on a clear page and change nothing: no new grant, no state change, and history
only where docs/lifecycle.md asks for it (`reconnect_rejected` for another account).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from devkit.serving import RunningServer
from statemachine.providers.oauth import new_pkce_pair
from statemachine.store import queries
from tests.database import CLIENT_ID, CLIENT_SECRET
from tests.web.support import OTHER, OWNER, Browser, SignIn, csrf_of, mailbox, now, row
from web import store
from web.pages import WebContext
from web.signing import hash_secret, new_secret
from web.tables import OAuthState, WebSession

ANA = {"email": "ana@gmail.test", "sub": "104400000000000000001"}
MALLORY = {"email": "mallory@gmail.test", "sub": "104400000000000000666"}
CALLBACK = "https://tokenwarden.test/auth/google/callback"


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {
        "GOOGLE_AUTH_URL": f"{sandbox.url}/authorize", "GOOGLE_TOKEN_URL": f"{sandbox.url}/token",
        "GOOGLE_REVOKE_URL": f"{sandbox.url}/revoke",
    }  # fmt: skip


@pytest.fixture
async def google(sandbox: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=5) as client:
        (await client.post("/_sandbox/reset")).raise_for_status()
        for account in (ANA, MALLORY):
            (await client.post("/_sandbox/accounts", json=account)).raise_for_status()
        yield client


async def start(client: httpx.AsyncClient, mailbox_id: int) -> str:
    """Press Reconnect; returns the provider URL we are sent to."""
    response = await client.post(f"/mailboxes/{mailbox_id}/reconnect", data={"csrf_token": await csrf_of(client)})
    assert response.status_code == 303, response.text
    return response.headers["location"]


async def consent(google: httpx.AsyncClient, authorize_url: str, account: dict[str, str] | None) -> str:
    """Answer the consent page as `account` (None: Deny); returns our callback path with its query."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    choice = {"account": account["sub"]} if account else {"deny": "1"}
    response = await google.post("/authorize", data={**params, **choice})
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return f"{back.path}?{back.query}"


async def disconnected(web: WebContext) -> int:
    return await mailbox(
        web, state="disconnected", token_refresh_error="invalid_grant: revoked", failure_kind="permanent"
    )


async def history_events(web: WebContext, mailbox_id: int) -> list[str]:
    async with web.runtime.sessionmaker() as session:
        return [r["event"] for r in await queries.history(session, mailbox_id)]


async def assert_unchanged(web: WebContext, mailbox_id: int, events: list[str] | None = None) -> None:
    mailbox_row = await row(web, mailbox_id)
    assert mailbox_row.state == "disconnected"
    assert mailbox_row.provider_subject is None
    token = web.runtime.cipher.decrypt(mailbox_row.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    assert token.startswith("1//refresh-SECRET-")
    assert await history_events(web, mailbox_id) == (events or [])


async def test_reconnect_sends_the_user_to_google_with_pkce_offline_access_and_a_signed_state(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient
) -> None:
    client = await sign_in()
    url = await start(client, await disconnected(web))
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert params["response_type"] == "code"
    assert (params["access_type"], params["prompt"]) == ("offline", "consent")
    assert params["scope"].split() == ["openid", "email", "https://mail.google.com/"]
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["login_hint"] == "ana@gmail.test"
    assert params["redirect_uri"] == CALLBACK
    assert web.signing.state_nonce(params["state"])
    assert (await google.get(url)).status_code == 200  # the sandbox accepts the request as Google would


async def test_reconnecting_with_the_mailboxs_own_account(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    callback = await client.get(await consent(google, await start(client, mailbox_id), ANA))
    assert (callback.status_code, callback.headers["location"]) == (303, "/")
    dashboard = (await client.get("/")).text
    assert "Gmail reconnected: ana@gmail.test is working again." in dashboard
    assert 'data-state="healthy"' in dashboard
    assert 'data-banner="disconnected"' not in dashboard
    assert "reconnected" not in (await client.get("/")).text  # the confirmation shows once
    mailbox_row = await row(web, mailbox_id)
    assert (mailbox_row.state, mailbox_row.provider_subject) == ("healthy", ANA["sub"])
    async with web.runtime.sessionmaker() as session:
        rows = await queries.history(session, mailbox_id)
    assert [(r["event"], r["actor"]) for r in rows] == [("reconnected", f"user:{OWNER}")]


async def test_another_account_stores_nothing_and_says_which_was_expected(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    page = await client.get(await consent(google, await start(client, mailbox_id), MALLORY))
    assert page.status_code == 403
    assert "as mallory@gmail.test, but this mailbox is ana@gmail.test" in page.text
    await assert_unchanged(web, mailbox_id, ["reconnect_rejected"])
    seen = (await google.get("/_sandbox/requests")).json()
    assert seen["by_grant_type"]["revoke"] == 1
    assert MALLORY["sub"] not in seen["live_grants_by_sub"]  # the grant Mallory gave by mistake is gone at Google


async def test_access_denied_at_google(web: WebContext, sign_in: SignIn, google: httpx.AsyncClient) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    page = await client.get(await consent(google, await start(client, mailbox_id), None))
    assert page.status_code == 400
    assert "You did not allow access at Gmail" in page.text
    await assert_unchanged(web, mailbox_id)


def _with_state(path: str, state: str | None) -> str:
    parts = urlsplit(path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.pop("state")
    if state is not None:
        query["state"] = state
    return f"{parts.path}?{urlencode(query)}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: None, "did not say which reconnect it belongs to"),
        (lambda state: state[:-2] + ("AA" if not state.endswith("AA") else "BB"), "altered or is not one of ours"),
        (lambda state: "eyJub25jZSI6ICJ4In0.ZZZZZZ.ZZZZZZZZZZZZZZZZZZZZZZZZZZZ", "altered or is not one of ours"),
    ],
    ids=["missing", "tampered-signature", "forged"],
)
async def test_a_missing_or_tampered_state_changes_nothing(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient, change: Callable[[str], str | None], message: str
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    path = await consent(google, await start(client, mailbox_id), ANA)
    state = parse_qs(urlsplit(path).query)["state"][0]
    page = await client.get(_with_state(path, change(state)))
    assert page.status_code == 400
    assert message in page.text
    await assert_unchanged(web, mailbox_id)


async def test_a_replayed_state_is_refused(web: WebContext, sign_in: SignIn, google: httpx.AsyncClient) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    path = await consent(google, await start(client, mailbox_id), ANA)
    assert (await client.get(path)).status_code == 303
    again = await client.get(path)
    assert again.status_code == 400
    assert "already finished" in again.text
    assert await history_events(web, mailbox_id) == ["reconnected"]


async def test_an_expired_state_is_refused(web: WebContext, sign_in: SignIn, google: httpx.AsyncClient) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    path = await consent(google, await start(client, mailbox_id), ANA)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(OAuthState).values(expires_at=now() - timedelta(seconds=1)))
    page = await client.get(path)
    assert page.status_code == 400
    assert "expired" in page.text
    await assert_unchanged(web, mailbox_id)


@pytest.mark.parametrize("who", [OWNER, OTHER], ids=["same-user-other-browser", "another-user"])
async def test_a_state_from_another_session_is_refused(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient, who: str
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    path = await consent(google, await start(client, mailbox_id), ANA)
    intruder = await sign_in(who)
    page = await intruder.get(path)
    assert page.status_code == 400
    assert "started in another browser" in page.text
    await assert_unchanged(web, mailbox_id)
    assert (await client.get(path)).status_code == 303  # the rightful session can still finish


async def test_a_code_for_another_users_mailbox_is_not_found(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient, sandbox: RunningServer
) -> None:
    """A state row bound to this session but naming someone else's mailbox (cannot be issued, but must fail)."""
    client = await sign_in()
    theirs = await mailbox(web, user=OTHER, state="disconnected", failure_kind="permanent")
    verifier, challenge = new_pkce_pair()
    nonce = new_secret()
    async with web.runtime.sessionmaker() as session, session.begin():
        session_id = await session.scalar(select(WebSession.id))
        sealed = web.runtime.cipher.encrypt(verifier, mailbox_id=theirs, role="pkce")
        await store.add_state(
            session, hash_secret(nonce), session_id, theirs, "google", sealed, now() + timedelta(minutes=5)
        )
    authorize = httpx.URL(f"{sandbox.url}/authorize").copy_merge_params(
        {"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code", "scope": "openid email",
         "state": web.signing.state(nonce), "code_challenge": challenge, "code_challenge_method": "S256"}
    )  # fmt: skip
    page = await client.get(await consent(google, str(authorize), ANA))
    assert page.status_code == 404
    await assert_unchanged(web, theirs)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (None, "did not accept the sign-in"),
        ({"mode": "outage", "seconds": 30}, "could not be reached or had a temporary problem"),
    ],
    ids=["bad-code", "provider-outage"],
)
async def test_a_failed_code_exchange_changes_nothing(
    web: WebContext, sign_in: SignIn, google: httpx.AsyncClient, fault: dict | None, message: str
) -> None:
    client = await sign_in()
    mailbox_id = await disconnected(web)
    path = await consent(google, await start(client, mailbox_id), ANA)
    if fault:
        (await google.post("/_sandbox/faults", json=fault)).raise_for_status()
    else:
        path = path.replace("code=4%2Fsandbox-", "code=4%2Fforged-")
    page = await client.get(path)
    assert page.status_code == 502
    assert message in page.text
    assert CLIENT_SECRET not in page.text
    await assert_unchanged(web, mailbox_id)


async def test_reconnect_needs_the_owner_a_session_and_the_csrf_token(
    web: WebContext, sign_in: SignIn, browser: Browser
) -> None:
    client = await sign_in()
    mine = await disconnected(web)
    theirs = await mailbox(web, user=OTHER, address="them@gmail.test")
    token = await csrf_of(client)
    assert (await client.post(f"/mailboxes/{theirs}/reconnect", data={"csrf_token": token})).status_code == 404
    assert (await client.post("/mailboxes/999999/reconnect", data={"csrf_token": token})).status_code == 404
    assert (await client.post(f"/mailboxes/{mine}/reconnect", data={})).status_code == 403
    link = await client.get(f"/mailboxes/{mine}/reconnect")  # the emails' link: to the card, never the flow
    assert (link.status_code, link.headers["location"]) == (303, f"/#mailbox-{mine}")
    assert (await browser().post(f"/mailboxes/{mine}/reconnect", data={"csrf_token": token})).status_code == 401
    assert (await browser().get("/auth/google/callback?code=x&state=y")).status_code == 401
    async with web.runtime.sessionmaker() as session:
        assert (await session.execute(select(OAuthState))).first() is None
