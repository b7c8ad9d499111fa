"""The dashboard through the real app and database: one banner per state, the incident notice, headers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import insert

from statemachine.store.models import Incident
from tests.database import CLIENT_SECRET, TEST_KEY
from tests.web.support import OTHER, SECRET_KEY, Browser, SignIn, mailbox, now
from web.pages import WebContext

REVOKED = "invalid_grant: Gmail says access was revoked or has expired; the mailbox owner needs to reconnect."


def card(html: str, mailbox_id: int) -> str:
    found = re.search(rf'<li class="mailbox" id="mailbox-{mailbox_id}".*?</li>', html, re.S)
    assert found is not None, html
    return found.group(0)


@pytest.mark.parametrize(
    ("state", "banner", "text"),
    [
        ("healthy", "connected", "Connected"),
        ("retrying", "trouble", "⚠️ Having trouble connecting. Retrying automatically."),
        ("degraded", "trouble", "Next try: in "),
        ("disconnected", "disconnected", "🔴 Gmail connection lost"),
    ],
)
async def test_each_state_renders_its_banner(
    web: WebContext, sign_in: SignIn, state: str, banner: str, text: str
) -> None:
    client = await sign_in()
    failing = {} if state == "healthy" else {"token_refresh_failed_at": now(), "failure_kind": "transient"}
    mailbox_id = await mailbox(web, state=state, next_refresh_at=now() + timedelta(minutes=5), **failing)
    page = await client.get("/")
    assert page.status_code == 200
    html = card(page.text, mailbox_id)
    assert f'data-state="{state}"' in html
    assert f'data-banner="{banner}"' in html
    assert text in html
    assert ("/reconnect" in html) is (state == "disconnected")


async def test_disconnected_banner_gives_the_reason_in_plain_words(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    mailbox_id = await mailbox(
        web, state="disconnected", token_refresh_error=REVOKED, failure_kind="permanent", next_refresh_at=None
    )
    html = card((await client.get("/")).text, mailbox_id)
    assert "Gmail says access was revoked or has expired" in html
    assert "invalid_grant" not in html
    assert "Reconnect Gmail" in html


async def test_an_open_incident_shows_one_calm_notice_instead_of_alarms(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    failing = {"token_refresh_failed_at": now(), "failure_kind": "transient"}
    first = await mailbox(web, state="degraded", **failing)
    second = await mailbox(web, address="ana.work@gmail.test", state="disconnected", **failing)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(Incident).values(provider="google", cause="Google's token endpoint answers 503"))
    page = (await client.get("/")).text
    assert page.count('data-banner="incident-notice"') == 1
    assert "Gmail is having problems on its side right now." in page
    for mailbox_id in (first, second):
        html = card(page, mailbox_id)
        assert 'data-banner="incident"' in html
        assert "/reconnect" not in html
    assert "🔴" not in page
    assert "⚠️" not in page


async def test_during_an_outage_a_revoked_grant_being_confirmed_is_not_dressed_as_the_outage(
    web: WebContext, sign_in: SignIn
) -> None:
    client = await sign_in()
    outage = await mailbox(web, state="retrying", token_refresh_failed_at=now(), failure_kind="transient")
    confirming = await mailbox(  # an invalid_grant during the outage: the user's own, not held (docs/incidents.md)
        web, address="ana.work@gmail.test", state="retrying", token_refresh_failed_at=now(),
        failure_kind="permanent", token_refresh_error=REVOKED,
    )  # fmt: skip
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(Incident).values(provider="google", kind="transient", cause="503s"))
    page = (await client.get("/")).text
    assert 'data-banner="incident"' in card(page, outage)
    assert 'data-banner="trouble"' in card(page, confirming)


async def test_a_user_sees_only_their_own_mailboxes(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    await mailbox(web, user=OTHER, address="someone.else@gmail.test")
    page = (await client.get("/")).text
    assert "someone.else@gmail.test" not in page
    assert "No mailbox is connected" in page


async def test_anonymous_visitors_get_an_explanation(browser: Browser) -> None:
    page = await browser().get("/")
    assert page.status_code == 200
    assert "You are not signed in" in page.text


async def test_security_headers_and_no_secret_in_pages(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    await mailbox(web, state="disconnected", token_refresh_error=REVOKED, failure_kind="permanent")
    page = await client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text
    assert "style=" not in page.text
    for secret in (SECRET_KEY, CLIENT_SECRET, TEST_KEY, "1//refresh-SECRET", *client.cookies.values()):
        assert secret not in page.text


async def test_addresses_and_reasons_are_escaped(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    hostile = '"><script>alert(1)</script>@evil.test'
    await mailbox(web, address=hostile, state="disconnected", token_refresh_error="x: <img src=x onerror=alert(2)>")
    page = (await client.get("/")).text
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
