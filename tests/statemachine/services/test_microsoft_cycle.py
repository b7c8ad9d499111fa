"""Microsoft mailboxes through real PostgreSQL and the sandbox Microsoft over HTTP: rotation on every refresh,
the crash windows around it, and the account learnt from the first refresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devkit.serving import RunningServer
from statemachine.services import cycle as cycle_module
from statemachine.services.cycle import run_cycle
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store.models import Mailbox
from tests.database import service_environment
from tests.factories import add_mailbox

TID, OID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "00000000-0000-0000-66f3-3332eca7ea81"


@pytest.fixture
async def ms_runtime(database_url: str, microsoft_sandbox: RunningServer) -> AsyncIterator[Runtime]:
    token_url = f"{microsoft_sandbox.url}/common/oauth2/v2.0/token"
    settings = load_settings(
        service_environment(database_url, MICROSOFT_TOKEN_URL=token_url, TOKENWARDEN_LEASE_SECONDS="1")
    )
    async with open_runtime(settings) as runtime:
        yield runtime


@pytest.fixture
async def control(microsoft_sandbox: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=microsoft_sandbox.url, timeout=5) as client:
        account = {"email": "ana@contoso.test", "sub": OID, "tid": TID}
        (await client.post("/_sandbox/accounts", json=account)).raise_for_status()
        yield client


async def sent(control: httpx.AsyncClient) -> dict[str, int]:
    """How often each refresh token was sent to the sandbox, in the order first sent."""
    return dict((await control.get("/_sandbox/requests")).json()["by_refresh_token"])


async def stored_token(runtime: Runtime, mailbox_id: int) -> tuple[str, str | None]:
    async with runtime.sessionmaker() as session:
        mailbox = (await session.execute(select(Mailbox).where(Mailbox.id == mailbox_id))).scalar_one()
        token = runtime.cipher.decrypt(mailbox.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
        return token, mailbox.provider_subject


async def connect(runtime: Runtime, control: httpx.AsyncClient) -> tuple[int, str]:
    token = (await control.post("/_sandbox/tokens", json={"sub": OID})).json()["refresh_token"]
    return await add_mailbox(runtime, token, address="ana@contoso.test", provider="microsoft"), token


async def test_the_stored_refresh_token_is_always_the_newest_over_many_cycles(
    ms_runtime: Runtime, control: httpx.AsyncClient
) -> None:
    mailbox_id, token = await connect(ms_runtime, control)
    seen = [token]
    for _ in range(12):
        result = await run_cycle(ms_runtime.cycle_deps(), mailbox_id, actor="test")
        assert result.status == "refreshed"
        stored, _ = await stored_token(ms_runtime, mailbox_id)
        assert stored not in seen  # a new one every refresh, and it is the one we keep
        seen.append(stored)
    assert await sent(control) == dict.fromkeys(
        seen[:-1], 1
    )  # each refresh sent the newest token, each token was sent once


async def test_the_first_refresh_teaches_a_cli_added_mailbox_its_tenant_and_object_id(
    ms_runtime: Runtime, control: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox_id, _ = await connect(ms_runtime, control)
    provider, asked = ms_runtime.providers["microsoft"], []
    real_refresh = provider.refresh

    async def refresh(refresh_token: str, *, account_known: bool = False) -> Any:
        asked.append(account_known)
        return await real_refresh(refresh_token, account_known=account_known)

    monkeypatch.setattr(provider, "refresh", refresh)
    assert (await stored_token(ms_runtime, mailbox_id))[1] is None
    await run_cycle(ms_runtime.cycle_deps(), mailbox_id, actor="test")
    assert (await stored_token(ms_runtime, mailbox_id))[1] == f"{TID}/{OID}"
    await run_cycle(ms_runtime.cycle_deps(), mailbox_id, actor="test")  # its id_token is no longer read
    assert (await stored_token(ms_runtime, mailbox_id))[1] == f"{TID}/{OID}"
    assert asked == [False, True]


async def crash_in(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, step: str, mailbox_id: int) -> None:
    """Run a cycle whose process dies in `step` (a function of the cycle module)."""

    async def crash(*args: Any) -> None:
        raise SystemExit(f"killed in {step}")

    with monkeypatch.context() as patch:
        patch.setattr(cycle_module, step, crash)
        with pytest.raises(SystemExit):
            await run_cycle(runtime.cycle_deps(), mailbox_id, actor="crashing worker")


async def test_a_crash_after_the_response_but_before_the_rotated_token_is_committed_loses_nothing(
    ms_runtime: Runtime, control: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new token is lost with the process; the old one is still stored, and Microsoft still honours it."""
    mailbox_id, token = await connect(ms_runtime, control)
    await crash_in(ms_runtime, monkeypatch, "_keep_rotated_token", mailbox_id)
    assert (await stored_token(ms_runtime, mailbox_id))[0] == token
    await _after_the_lease(ms_runtime, mailbox_id)


async def test_a_crash_after_the_rotated_token_is_committed_keeps_the_new_one(
    ms_runtime: Runtime, control: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox_id, token = await connect(ms_runtime, control)
    await crash_in(ms_runtime, monkeypatch, "_apply_outcome", mailbox_id)
    stored, _ = await stored_token(ms_runtime, mailbox_id)
    assert stored != token
    assert stored not in await sent(control)  # the newest, never sent yet
    await _after_the_lease(ms_runtime, mailbox_id)
    assert (await sent(control))[stored] == 1  # the next cycle used the committed token


async def _after_the_lease(runtime: Runtime, mailbox_id: int) -> None:
    """Once the crashed cycle's lease runs out, the next cycle refreshes and the mailbox stays healthy."""
    for _ in range(40):
        result = await run_cycle(runtime.cycle_deps(), mailbox_id, actor="next worker")
        if result.status != "busy":
            break
        await asyncio.sleep(0.1)
    assert result.status == "refreshed"
    assert result.outcome is not None
    assert result.outcome.to_state == "healthy"
