"""The demo-only pages on the real app, database and the served sandbox providers: /dev/mail and /dev/sandbox.

They must exist only when `create_app` is given a `DemoConfig` (what `tokenwarden demo` does), and
never show a refresh token. The panel's controls go through the sandbox's real fault API.
"""

from __future__ import annotations

import asyncio
import mailbox as maildir_lib
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from devkit.demo.config import DemoConfig
from devkit.demo.host import HostApp
from devkit.demo.pages import extension
from devkit.sandbox import create_sandboxes
from devkit.serving import RunningServer, serve_in_thread
from statemachine.store import queries
from tests.database import CLIENT_ID, CLIENT_SECRET
from tests.web.support import ADMIN, Browser, SignIn, csrf_of, mailbox
from web.app import create_app
from web.pages import WebContext

DEV_PAGES = ["/dev/mail", "/dev/mail/anything", "/dev/mail/anything/html", "/dev/sandbox", "/dev/host"]
DEV_POSTS = ["/dev/sandbox/mailboxes/1/break", "/dev/sandbox/provider/outage", "/dev/host/webhooks"]
TOKEN_PREFIX = "1//refresh-SECRET-"  # tests.web.support.mailbox's refresh tokens


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def sandbox() -> Iterator[RunningServer]:
    """The demo's sandbox: both providers in one server (Microsoft under /microsoft)."""
    with serve_in_thread(create_sandboxes(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)) as running:
        yield running


@pytest.fixture
def app(web: WebContext, sandbox: RunningServer, maildir: Path) -> Starlette:
    """This module's app is the demo's: the shared `browser` and `sign_in` fixtures use it."""
    host = HostApp(web.base_url, sandbox.url)
    return create_app(web.runtime.settings, context=web, extension=extension(DemoConfig(maildir, sandbox.url), host))


async def faults(sandbox: RunningServer, mount: str = "") -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        body: dict[str, Any] = (await client.get(f"{sandbox.url}{mount}/_sandbox/faults")).json()
        return body


def deliver(maildir: Path, subject: str, text: str, html: str) -> str:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Tokenwarden <t@demo.test>", "ana@demo.test", subject
    message["Date"] = "Sat, 28 Nov 2026 14:00:05 +0000"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return maildir_lib.Maildir(maildir, create=True).add(message.as_bytes())


@pytest.mark.parametrize("path", DEV_PAGES + DEV_POSTS)
async def test_the_dev_routes_do_not_exist_outside_demo_mode(web: WebContext, path: str) -> None:
    normal = create_app(web.runtime.settings, context=web)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=normal), base_url=web.base_url) as client:
        response = await (client.post(path) if path in DEV_POSTS else client.get(path))
        assert response.status_code == 404
        assert "demo timings" not in (await client.get("/")).text


async def test_mail_lists_each_message_and_shows_its_text_and_html(browser: Browser, maildir: Path) -> None:
    html_part = '<html><head></head><body style="color: red"><p>Hi</p><a href="/r">Reconnect</a></body></html>'
    key = deliver(maildir, "Please reconnect ana@gmail.test", "Hi Ana, please reconnect.", html_part)
    client = browser()
    listing = await client.get("/dev/mail")
    assert f'data-mail="{key}"' in listing.text
    assert "Please reconnect ana@gmail.test" in listing.text
    assert "28 Nov 2026, 14:00:05 UTC" in listing.text
    assert 'data-demo="timings"' in listing.text  # the "demo timings" label on every page
    page = await client.get(f"/dev/mail/{key}")
    assert "Hi Ana, please reconnect." in page.text
    assert page.headers["content-security-policy"].endswith("frame-src 'self'")
    html = await client.get(f"/dev/mail/{key}/html")
    csp = html.headers.get_list("content-security-policy")
    assert len(csp) == 1
    assert "style-src 'unsafe-inline'" in csp[0]
    assert "frame-ancestors 'self'" in csp[0]
    assert html.headers["x-frame-options"] == "SAMEORIGIN"
    assert '<head><base target="_top">' in html.text  # its links open in the window, not the frame
    assert (await client.get("/dev/mail/..%2Fsecrets.json")).status_code == 404
    assert (await client.get("/dev/mail/nope")).status_code == 404


async def test_the_sandbox_panel_is_for_operators_with_a_csrf_token(
    web: WebContext, sign_in: SignIn, browser: Browser
) -> None:
    mailbox_id = await mailbox(web)
    assert (await browser().get("/dev/sandbox")).status_code == 401
    user = await sign_in()
    assert (await user.get("/dev/sandbox")).status_code == 403
    admin = await sign_in(ADMIN, admin=True)
    response = await admin.post(f"/dev/sandbox/mailboxes/{mailbox_id}/break", data={"mode": "revoke"})
    assert response.status_code == 403
    assert (await admin.get("/dev/sandbox")).status_code == 200


async def test_breaking_a_mailbox_sets_the_fault_and_asks_for_a_refresh_now(
    web: WebContext, sign_in: SignIn, sandbox: RunningServer
) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    form = {"csrf_token": await csrf_of(admin, "/dev/sandbox"), "mode": "5xx", "count": "2"}
    response = await admin.post(f"/dev/sandbox/mailboxes/{mailbox_id}/break", data=form)
    assert (response.status_code, response.headers["location"]) == (303, "/dev/sandbox")
    fault = (await faults(sandbox))["tokens"][TOKEN_PREFIX + "ana@gmail.test"]
    assert (fault["mode"], fault["count"]) == ("http_5xx", 2)
    page = (await admin.get("/dev/sandbox")).text
    assert "server error (503) for its next 2 token requests" in page
    assert re.search(rf'data-mailbox="{mailbox_id}".*?data-fault="http_5xx"', page, re.S)
    assert TOKEN_PREFIX not in page
    async with web.runtime.sessionmaker() as session:
        history = await queries.history(session, mailbox_id)
    assert [(h["event"], h["actor"]) for h in history] == [("ops_retry_now", f"operator:{ADMIN}")]
    clear = await admin.post(f"/dev/sandbox/mailboxes/{mailbox_id}/clear", data={"csrf_token": form["csrf_token"]})
    assert clear.status_code == 303
    assert (await faults(sandbox))["tokens"] == {}


async def test_breaking_a_microsoft_mailbox_sets_the_fault_at_the_sandbox_microsoft(
    web: WebContext, sign_in: SignIn, sandbox: RunningServer
) -> None:
    mailbox_id = await mailbox(web, address="ana@contoso.test", provider="microsoft")
    admin = await sign_in(ADMIN, admin=True)
    form = {"csrf_token": await csrf_of(admin, "/dev/sandbox"), "mode": "mfa"}
    await admin.post(f"/dev/sandbox/mailboxes/{mailbox_id}/break", data=form)
    assert (await faults(sandbox, "/microsoft"))["tokens"][TOKEN_PREFIX + "ana@contoso.test"]["mode"] == "mfa_required"
    assert (await faults(sandbox))["tokens"] == {}  # not the sandbox Google's
    page = (await admin.get("/dev/sandbox")).text
    assert "the sandbox Microsoft now answers a fresh multi-factor sign-in required" in page
    assert re.search(rf'data-mailbox="{mailbox_id}".*?data-fault="mfa_required"', page, re.S)


async def test_provider_wide_controls(web: WebContext, sign_in: SignIn, sandbox: RunningServer) -> None:
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, "/dev/sandbox")
    await admin.post("/dev/sandbox/provider/outage", data={"csrf_token": token, "minutes": "2"})
    provider = (await faults(sandbox))["provider"]
    assert provider["mode"] == "outage"
    assert 110 < provider["remaining_seconds"] <= 120
    assert 'data-provider-fault="outage"' in (await admin.get("/dev/sandbox")).text
    await admin.post("/dev/sandbox/provider/misconfigure", data={"csrf_token": token})
    assert (await faults(sandbox))["provider"]["mode"] == "invalid_client"
    await admin.post("/dev/sandbox/provider/clear", data={"csrf_token": token})
    assert (await faults(sandbox)) == {"provider": None, "tokens": {}}
    bad = await admin.post("/dev/sandbox/provider/outage", data={"csrf_token": token, "minutes": "999"})
    assert bad.status_code == 303
    assert "minutes must be above 0 and at most 60" in (await admin.get("/dev/sandbox")).text


async def test_a_bad_control_changes_nothing_and_says_why(web: WebContext, sign_in: SignIn) -> None:
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, "/dev/sandbox")
    await admin.post("/dev/sandbox/mailboxes/424242/break", data={"csrf_token": token, "mode": "revoke"})
    assert "Nothing was done: no mailbox 424242." in (await admin.get("/dev/sandbox")).text
    mailbox_id = await mailbox(web)
    await admin.post(f"/dev/sandbox/mailboxes/{mailbox_id}/break", data={"csrf_token": token, "mode": "explode"})
    assert "Nothing was done: mode must be one of" in (await admin.get("/dev/sandbox")).text


async def test_the_panel_says_so_when_the_sandbox_is_not_answering(
    web: WebContext, sign_in: SignIn, sandbox: RunningServer
) -> None:
    admin = await sign_in(ADMIN, admin=True)
    await asyncio.to_thread(sandbox.stop)
    page = await admin.get("/dev/sandbox")
    assert page.status_code == 502
    assert "is not answering" in page.text
