"""Connect sessions end to end through the sandbox Google over real HTTP, and every way they are refused.

Refusals change nothing: no mailbox, no grant stored, no cookie; the host app learns the outcome from
GET /v1/connect-sessions/{id}, not from the redirect's query.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import update

from devkit.serving import RunningServer
from statemachine.store import queries
from tests.web.support import Browser, mailbox, now, row
from tests.web.v1.conftest import ANA, Api
from web.pages import WebContext
from web.tables import ConnectSession

RETURN = "https://app.example.test/after"
MALLORY = {"email": "mallory@gmail.test", "sub": "104400000000000000666"}


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {
        "GOOGLE_AUTH_URL": f"{sandbox.url}/authorize",
        "GOOGLE_TOKEN_URL": f"{sandbox.url}/token",
        "TOKENWARDEN_ALLOWED_RETURN_URLS": f"{RETURN},https://other.example.test:8443/",
    }


async def new_session(api: Api, **body: object) -> dict[str, str]:
    response = await api().post("/v1/connect-sessions", json={"user_email": "host-user@example.test",
                                                              "return_url": f"{RETURN}?tab=mail", **body})  # fmt: skip
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def consent(google: httpx.AsyncClient, authorize_url: str, account: dict[str, str] | None) -> str:
    """Answer the sandbox's consent page as `account` (None: Deny); returns our callback path and query."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    assert params["code_challenge_method"] == "S256"
    choice = {"account": account["sub"]} if account else {"deny": "1"}
    response = await google.post("/authorize", data={**params, **choice})
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    return f"{back.path}?{back.query}"


async def go_through(
    browser: httpx.AsyncClient, google: httpx.AsyncClient, link: str, account: dict[str, str] | None
) -> dict[str, list[str]]:
    """Open the link, consent, come back: the query our redirect to the host app carries."""
    opened = await browser.get(link)
    assert opened.status_code == 303, opened.text
    back = await browser.get(await consent(google, opened.headers["location"], account))
    assert back.status_code == 303, back.text
    target = urlsplit(back.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == RETURN
    return parse_qs(target.query)


async def test_a_connect_link_creates_the_users_mailbox_and_signs_nobody_in(
    web: WebContext, api: Api, browser: Browser, google: httpx.AsyncClient
) -> None:
    created = await new_session(api)
    client = browser()
    query = await go_through(client, google, created["url"], ANA)
    assert query["status"] == ["connected"]
    assert query["session_id"] == [created["id"]]
    assert query["tab"] == ["mail"]
    mailbox_id = int(query["mailbox_id"][0])
    assert not client.cookies  # the consent was bound to the connect session, not to a dashboard session
    assert (await client.get("/")).text.count("data-mailbox") == 0
    view = (await api().get(f"/v1/connect-sessions/{created['id']}")).json()
    assert (view["status"], view["mailbox_id"], view["user_email"]) == (
        "connected",
        mailbox_id,
        "host-user@example.test",
    )
    mailbox_row = await row(web, mailbox_id)
    assert (mailbox_row.address, mailbox_row.state, mailbox_row.provider_subject) == (
        "ana@gmail.test",
        "healthy",
        ANA["sub"],
    )
    again = await new_session(api)
    assert (await go_through(browser(), google, again["url"], ANA))["status"] == ["reconnected"]


async def test_a_reused_or_expired_link_is_refused_and_changes_nothing(
    web: WebContext, api: Api, browser: Browser, google: httpx.AsyncClient
) -> None:
    used = await new_session(api)
    assert (await browser().get(used["url"])).status_code == 303
    reused = await browser().get(used["url"])
    assert reused.status_code == 400
    assert "already opened" in reused.text
    late = await new_session(api)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(ConnectSession).where(ConnectSession.public_id == late["id"])
                              .values(expires_at=now() - timedelta(seconds=1)))  # fmt: skip
    expired = await browser().get(late["url"])
    assert expired.status_code == 400
    assert "expired" in expired.text
    assert (await api().get(f"/v1/connect-sessions/{late['id']}")).json()["status"] == "expired"
    async with web.runtime.sessionmaker() as session:
        assert await queries.list_mailboxes(session) == []


async def test_consent_with_another_account_for_a_named_mailbox_is_rejected(
    web: WebContext, api: Api, browser: Browser, google: httpx.AsyncClient
) -> None:
    (await google.post("/_sandbox/accounts", json=MALLORY)).raise_for_status()
    mailbox_id = await mailbox(web, user="host-user@example.test", state="disconnected", failure_kind="permanent")
    created = await new_session(api, mailbox_id=mailbox_id)
    query = await go_through(browser(), google, created["url"], MALLORY)
    assert query["status"] == ["rejected"]
    mailbox_row = await row(web, mailbox_id)
    assert (mailbox_row.state, mailbox_row.provider_subject) == ("disconnected", None)
    denied = await new_session(api, mailbox_id=mailbox_id)
    assert (await go_through(browser(), google, denied["url"], None))["status"] == ["denied"]
    assert (await api().get(f"/v1/connect-sessions/{denied['id']}")).json()["status"] == "denied"


@pytest.mark.parametrize(
    "return_url",
    [
        "https://app.example.test.evil.io/after",
        "https://app.example.test:444/after",
        "http://app.example.test/after",
        "https://app.example.test/afterwards",
        "https://app.example.test/",
        "https://user@app.example.test/after",
        "https://app.example.test/after#x",
        "javascript:alert(1)",
    ],
)
async def test_a_return_url_not_allowed_is_refused_at_creation(api: Api, return_url: str) -> None:
    response = await api().post("/v1/connect-sessions", json={"user_email": "u@example.test", "return_url": return_url})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "return_url_not_allowed"


async def test_allowed_return_urls_match_by_parts(api: Api) -> None:
    for url in (f"{RETURN}/deeper", "https://other.example.test:8443/anything", "https://APP.example.test:443/after"):
        response = await api().post("/v1/connect-sessions", json={"user_email": "u@example.test", "return_url": url})
        assert response.status_code == 201, url
