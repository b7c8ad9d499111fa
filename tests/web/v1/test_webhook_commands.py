"""`tokenwarden webhooks deliveries|redeliver` and `rotate-keys` re-encrypting the endpoints' secrets."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from statemachine.cli.main import main
from statemachine.core.secrets import Secret, TokenCipher
from statemachine.services.webhook_endpoints import create_endpoint, decrypt_secret
from statemachine.store.models import WebhookDelivery, WebhookEndpoint
from tests.database import TEST_KEY
from tests.web.support import mailbox
from web.pages import WebContext


@pytest.fixture
def cli_env(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in web_env.items():
        monkeypatch.setenv(key, value)
    return web_env


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def endpoint(web: WebContext) -> str:
    async with web.runtime.sessionmaker() as session, session.begin():
        _, secret = await create_endpoint(
            session, web.runtime.cipher, "https://hooks.example.test/", ["mailbox.connected"], allow_private=False
        )
    return secret


@pytest.mark.usefixtures("cli_env")
async def test_failed_deliveries_are_listed_and_can_be_sent_again(
    web: WebContext, capsys: pytest.CaptureFixture[str]
) -> None:
    await endpoint(web)
    await mailbox(web)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(WebhookDelivery).values(status="failed", last_error="gave up: HTTP 500"))
    code, out = await run(capsys, "webhooks", "deliveries", "--failed", "--json")
    (failed,) = json.loads(out)
    assert (code, failed["type"], failed["status"]) == (0, "mailbox.connected", "failed")
    assert "body" not in failed
    code, out = await run(capsys, "webhooks", "redeliver", str(failed["id"]))
    assert code == 0
    assert json.loads((await run(capsys, "webhooks", "deliveries", "--failed", "--json"))[1]) == []
    assert "pending" in (await run(capsys, "webhooks", "deliveries"))[1]
    assert (await run(capsys, "webhooks", "redeliver", "999"))[0] == 1


async def test_rotate_keys_re_encrypts_webhook_secrets(
    web: WebContext, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await endpoint(web)
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("TOKENWARDEN_ENCRYPTION_KEYS", f"{new_key},{TEST_KEY}")
    code, out = await run(capsys, "rotate-keys")
    assert code == 0
    assert "1 webhook secret(s)" in out
    async with web.runtime.sessionmaker() as session:
        row = (await session.scalars(select(WebhookEndpoint))).one()
    assert decrypt_secret(TokenCipher([Secret(new_key)]), row.id, row.secret_ciphertext) == secret
