"""The demo's host app against the real app (public /v1 API only) and the sandbox Google's Gmail over HTTP:
a token the sandbox no longer honours gives a 401, which is reported; webhooks are verified and shown."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from devkit.demo.config import DemoConfig
from devkit.demo.host import HostApp
from devkit.demo.pages import extension
from devkit.serving import RunningServer
from jobs.webhooks import deliver_webhook, due_deliveries
from statemachine.store.models import WebhookDelivery
from tests.web.support import Browser
from tests.web.v1.conftest import ANA
from tests.web.v1.support import granted_mailbox, store_access_token
from web.app import create_app
from web.pages import WebContext
from web.v1.keys import create_key


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {"GOOGLE_TOKEN_URL": f"{sandbox.url}/token", "TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE": "true"}


@pytest.fixture
def host(web: WebContext, sandbox: RunningServer) -> HostApp:
    return HostApp(web.base_url, sandbox.url)


@pytest.fixture
def app(web: WebContext, sandbox: RunningServer, host: HostApp, tmp_path: Path) -> Starlette:
    return create_app(web.runtime.settings, context=web, extension=extension(DemoConfig(tmp_path, sandbox.url), host))


async def loopback(host: str, port: int) -> list[str]:
    """The resolver the delivery job gets: no DNS lookup leaves the machine (the app is in-process anyway)."""
    return ["127.0.0.1"]


async def test_the_host_app_reports_a_401_and_shows_the_verified_webhook(
    web: WebContext, app: Starlette, host: HostApp, sandbox: RunningServer, browser: Browser
) -> None:
    async with web.runtime.sessionmaker() as session, session.begin():
        key = await create_key(session, "demo-host-app")
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url=web.base_url, headers=headers) as api,
        httpx.AsyncClient(base_url=sandbox.url) as gmail,
    ):
        await host.start(api)
        (await gmail.post("/_sandbox/reset")).raise_for_status()
        (await gmail.post("/_sandbox/accounts", json=ANA)).raise_for_status()
        mailbox_id = await granted_mailbox(web, gmail, token_seconds=3000)  # connected: a webhook
        await store_access_token(web, mailbox_id, "ya29.revoked-meanwhile", 3000)
        await host.sync_once(api, gmail)  # the stored token is not the sandbox's: 401, reported, refreshed
        await host.sync_once(api, gmail)  # now with the refreshed token: no 401
        async with web.runtime.sessionmaker() as session:
            assert await session.scalar(select(WebhookDelivery.type)) == "mailbox.connected"
            due = await due_deliveries(session)
        async with httpx.AsyncClient(transport=transport, base_url=web.base_url) as receiver_side:
            ctx = {"runtime": web.runtime, "webhook_http": receiver_side, "webhook_resolver": loopback}
            assert [await deliver_webhook(ctx, delivery_id) for delivery_id, *_ in due] == ["delivered"]
    kinds = [kind for _, kind, _ in host.lines]
    assert kinds.count("401") == 1
    assert kinds.count("report") == 1
    assert kinds[0] == "webhook"
    page = await browser().get("/dev/host")
    assert page.status_code == 200
    assert "mailbox.connected #" in page.text
    assert "reporting it" in page.text
    assert "ya29" not in page.text
    forged = await browser().post("/dev/host/webhooks", content=b"{}", headers={"webhook-id": "x"})
    assert forged.status_code == 400
