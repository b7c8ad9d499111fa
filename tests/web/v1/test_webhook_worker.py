"""A worker SIGKILLed in the middle of a webhook delivery loses nothing: the next worker sends the same event."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from devkit.serving import RunningServer, serve_in_thread
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.services.webhook_endpoints import create_endpoint
from statemachine.store.models import WebhookDelivery
from tests.database import service_environment
from tests.factories import add_mailbox
from tests.jobs.support import start_worker, stop, wait_until
from tests.web.v1.receiver import Receiver


@pytest.fixture
def worker_env(database_url: str, redis_url: str, sandbox: RunningServer) -> dict[str, str]:
    return service_environment(
        database_url,
        REDIS_URL=redis_url,
        GOOGLE_TOKEN_URL=f"{sandbox.url}/token",
        TOKENWARDEN_METRICS_PORT="0",
        TOKENWARDEN_OUTBOX_INTERVAL_SECONDS="1",
        TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE="true",
        TOKENWARDEN_WEBHOOK_TIMEOUT_SECONDS="2",
        TOKENWARDEN_LOG_LEVEL="INFO",
    )


@pytest.fixture
async def runtime(worker_env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with open_runtime(load_settings(worker_env)) as rt:
        yield rt


async def delivery(runtime: Runtime) -> WebhookDelivery:
    async with runtime.sessionmaker() as session:
        return (await session.scalars(select(WebhookDelivery))).one()


async def test_a_delivery_cut_by_sigkill_is_sent_again_with_the_same_id(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    receiver = Receiver(hang_first=True)
    with serve_in_thread(receiver.app()) as running:
        async with runtime.sessionmaker() as session, session.begin():
            _, secret = await create_endpoint(
                session, runtime.cipher, f"{running.url}/hooks", ["mailbox.connected"], allow_private=True
            )
        await add_mailbox(runtime, "1//refresh-SECRET-kill")
        first = start_worker(worker_env, tmp_path / "worker1.log")
        try:
            assert await asyncio.to_thread(receiver.arrived.wait, 30), "the first worker never delivered"
        finally:
            assert stop(first, signal.SIGKILL) == -signal.SIGKILL
        receiver.release.set()
        cut = await delivery(runtime)
        assert (cut.status, cut.attempts) == ("pending", 1)
        second = start_worker(worker_env, tmp_path / "worker2.log")
        try:

            async def delivered() -> bool:
                return (await delivery(runtime)).status == "delivered"

            await wait_until(delivered, 40, "the second worker delivers the event")
        finally:
            stop(second, signal.SIGTERM)
    assert len(receiver.received) == 2
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
    assert receiver.received[0].body == receiver.received[1].body
    payload = Webhook(secret).verify(receiver.received[1].body, receiver.received[1].headers)
    assert payload["type"] == "mailbox.connected"
    log = (tmp_path / "worker1.log").read_text() + (tmp_path / "worker2.log").read_text()
    assert secret not in log
