"""The README's "Integrating your app" Python examples, run as written: the sync loop against `tokenwarden serve`
and the sandbox Google over HTTP, and the webhook verification against a signed event."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from devkit.serving import RunningServer
from statemachine.services.webhook_endpoints import new_secret
from tests.web.support import ROOT, start_serving, stop_serving
from tests.web.v1.conftest import ANA
from tests.web.v1.support import granted_mailbox, store_access_token
from web.pages import WebContext


def readme_examples() -> dict[str, Any]:
    """Every ```python block of the section, executed into one namespace."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Integrating your app", 1)[1].split("\n## ", 1)[0]
    namespace: dict[str, Any] = {}
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    return namespace


@pytest.fixture
def served(web_env: dict[str, str], sandbox: RunningServer, tmp_path: Path) -> Iterator[str]:
    env = {**web_env, "GOOGLE_TOKEN_URL": f"{sandbox.url}/token"}
    url, process = start_serving(env, tmp_path / "serve.log")
    try:
        yield url
    finally:
        stop_serving(process)


async def test_the_sync_loop_syncs_skips_and_reports_401s(
    web: WebContext, served: str, api_key: str, google: httpx.AsyncClient, sandbox: RunningServer
) -> None:
    synced = await granted_mailbox(web, google)
    refused = await granted_mailbox(web, google, address="ana.old@gmail.test", token_seconds=3000)
    await store_access_token(web, refused, "ya29.no-longer-honoured", 3000)
    skipped = await granted_mailbox(web, google, address="ana.gone@gmail.test", state="disconnected",
                                    failure_kind="permanent", token_refresh_error="invalid_grant: revoked")  # fmt: skip
    sync_once = readme_examples()["sync_once"]
    seen = await asyncio.to_thread(sync_once, served, api_key, sandbox.url)
    assert seen == {
        synced: f"synced {ANA['email']}",
        refused: "reported 401",
        skipped: "skipped: \U0001f534 Gmail connection lost",
    }


def test_the_webhook_check_accepts_our_signature_and_nothing_else() -> None:
    verified_event = readme_examples()["verified_event"]
    secret, body = new_secret(), b'{"type":"mailbox.connected","timestamp":"2026-11-30T11:00:00+00:00","data":{}}'
    now = datetime.now(UTC)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign("msg_1", now, body.decode())}  # fmt: skip
    assert verified_event(secret, headers, body)["type"] == "mailbox.connected"
    assert verified_event(secret, headers, body.replace(b"connected", b"removed")) is None
    assert verified_event(new_secret(), headers, body) is None
