"""The demo's "mail sync" host app: what a real app does with Tokenwarden, through the public /v1 API only.

Every few seconds it lists the mailboxes, asks for an access token for each active one, calls the
sandbox Google's Gmail-like profile endpoint with it, and reports a 401 through `auth-failures`. It
subscribes its own webhook endpoint (/dev/host/webhooks), verifies each event with the
`standardwebhooks` package, and /dev/host shows what it saw, newest first. Break a mailbox on the
sandbox panel and, within seconds, the 401, the report, the webhook, the banner and the email appear.
It holds its own API key (created at start, as an operator would with `tokenwarden api-key create`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.store.db import Sessionmaker
from web.auth import authenticate
from web.pages import render
from web.v1.keys import create_key

logger = logging.getLogger(__name__)
SYNC_SECONDS = 3.0
KEPT_LINES = 200
EVENTS = ["mailbox.state_changed", "mailbox.connected", "mailbox.removed", "provider_incident.opened",
          "provider_incident.closed"]  # fmt: skip


@dataclass
class HostApp:
    """The host app's state: its key, its webhook secret, and what it saw."""

    tokenwarden: str
    gmail: str
    key: str = ""
    secret: str = ""
    lines: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    mailboxes: dict[int, dict[str, Any]] = field(default_factory=dict)

    def saw(self, kind: str, text: str) -> None:
        self.lines.appendleft((datetime.now(UTC).strftime("%H:%M:%S"), kind, text))

    async def start(self, api: httpx.AsyncClient) -> None:
        """Subscribe the webhook endpoint (the API's answer is the only time the secret is shown)."""
        body = {"url": f"{self.tokenwarden}/dev/host/webhooks", "events": EVENTS}
        created = (await api.post("/v1/webhook-endpoints", json=body)).raise_for_status().json()
        self.secret = created["secret"]
        self.saw("setup", f"webhook endpoint {created['id']} subscribed to {', '.join(EVENTS)}")

    async def sync_once(self, api: httpx.AsyncClient, gmail: httpx.AsyncClient) -> None:
        mailboxes = (await api.get("/v1/mailboxes", params={"limit": 200})).raise_for_status().json()["data"]
        self.mailboxes = {m["id"]: m for m in mailboxes}
        for mailbox in mailboxes:
            if mailbox["is_active"]:
                await self._sync(api, gmail, mailbox)

    async def _sync(self, api: httpx.AsyncClient, gmail: httpx.AsyncClient, mailbox: dict[str, Any]) -> None:
        answer = await api.post(f"/v1/mailboxes/{mailbox['id']}/access-token", json={"min_valid_seconds": 30})
        if answer.status_code != 200:
            self.saw("token", f"{mailbox['address']}: no token ({answer.json()['error']['code']})")
            return
        token = answer.json()["access_token"]
        profile = await gmail.get("/gmail/v1/users/me/profile", headers={"Authorization": f"Bearer {token}"})
        if profile.status_code == 401:
            self.saw("401", f"{mailbox['address']}: Gmail answered 401; reporting it")
            report = {"status": 401, "detail": "GET /gmail/v1/users/me/profile answered 401"}
            reported = await api.post(f"/v1/mailboxes/{mailbox['id']}/auth-failures", json=report)
            self.saw("report", f"{mailbox['address']}: reported; Tokenwarden says {reported.json().get('state')}")

    def receive(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.saw("webhook", "refused a webhook whose signature did not verify")
            return False
        data = event["data"]
        if "mailbox_id" in data:
            text = (f"{event['type']} #{data['sequence']}: {data['address']} {data['from_state']} → "
                    f"{data['to_state']} ({data['reason']})")  # fmt: skip
        else:
            text = f"{event['type']}: {data['provider']} ({data['cause']})"
        self.saw("webhook", text)
        return True


async def run(host: HostApp, sessionmaker: Sessionmaker) -> None:
    """Create the key, subscribe, then sync every few seconds until cancelled; a failed pass is logged and retried."""
    async with sessionmaker() as session, session.begin():
        host.key = await create_key(session, f"demo-host-app-{datetime.now(UTC):%Y%m%d%H%M%S%f}")
    headers = {"Authorization": f"Bearer {host.key}"}
    async with (
        httpx.AsyncClient(base_url=host.tokenwarden, headers=headers, timeout=30) as api,
        httpx.AsyncClient(base_url=host.gmail, timeout=10) as gmail,
    ):
        await host.start(api)
        while True:
            try:
                await host.sync_once(api, gmail)
            except httpx.HTTPError as err:
                host.saw("error", f"sync pass failed: {type(err).__name__}")
            await asyncio.sleep(SYNC_SECONDS)


@contextlib.asynccontextmanager
async def running(host: HostApp, sessionmaker: Sessionmaker) -> AsyncIterator[None]:
    task = asyncio.create_task(run(host, sessionmaker), name="demo-host-app")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def host_of(request: Request) -> HostApp:
    host: HostApp = request.app.state.page_context["host"]
    return host


async def page(request: Request) -> Response:
    """GET /dev/host: what the host app saw, and its view of each mailbox (the API's banner)."""
    await authenticate(request)
    host = host_of(request)
    return render(request, "dev/host.html", {"lines": list(host.lines), "mailboxes": list(host.mailboxes.values())})


async def webhooks(request: Request) -> Response:
    """POST /dev/host/webhooks: the host app's receiver (as if it were another server)."""
    accepted = host_of(request).receive(dict(request.headers), await request.body())
    return JSONResponse({"ok": accepted}, status_code=200 if accepted else 400)


routes = [
    Route("/dev/host", page, methods=["GET"], name="dev_host"),
    Route("/dev/host/webhooks", webhooks, methods=["POST"], name="dev_host_webhooks"),
]
