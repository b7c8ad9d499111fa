"""Webhooks end to end: endpoints made through /v1, events written with the change, delivered by the worker's job
to a receiver over real HTTP, signed per Standard Webhooks (checked with the `standardwebhooks` verifier)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from devkit.serving import RunningServer, serve_in_thread
from jobs.webhooks import deliver_webhook, due_deliveries, make_client
from statemachine.core.errors import Verdict
from statemachine.core.incident_rules import IncidentThresholds
from statemachine.core.machine import Occurrence
from statemachine.core.states import Event, FailureKind
from statemachine.services.operations import operator_action
from statemachine.services.runtime import Runtime
from statemachine.services.unit_of_work import apply_event
from statemachine.store.incidents import IncidentGuard, close_recovered
from statemachine.store.models import Notification, WebhookDelivery, WebhookEndpoint
from statemachine.store.repository import lock_mailbox
from tests.web.support import mailbox
from tests.web.v1.conftest import Api
from tests.web.v1.receiver import Receiver
from web.app import create_app
from web.pages import WebContext

ALL_MAILBOX_EVENTS = ["mailbox.connected", "mailbox.state_changed", "mailbox.removed"]


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {
        "GOOGLE_TOKEN_URL": f"{sandbox.url}/token",
        "TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE": "true",
        "TOKENWARDEN_WEBHOOK_RETRY_BASE_SECONDS": "0",
        "TOKENWARDEN_USER_EMAILS": "off",
    }


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def receiving(receiver: Receiver) -> Iterator[str]:
    with serve_in_thread(receiver.app()) as running:
        yield f"{running.url}/hooks"


@pytest.fixture
async def worker_ctx(web: WebContext) -> AsyncIterator[dict[str, Any]]:
    async with make_client(web.runtime.settings) as http:
        yield {"runtime": web.runtime, "webhook_http": http}


async def deliver_all(web: WebContext, ctx: dict[str, Any]) -> list[str]:
    """What the sweeper and the jobs do, one pass."""
    async with web.runtime.sessionmaker() as session:
        due = await due_deliveries(session)
    return [await deliver_webhook(ctx, delivery_id) for delivery_id, *_ in due]


async def subscribe(api: Api, url: str, events: list[str] = ALL_MAILBOX_EVENTS) -> dict[str, Any]:
    response = await api().post("/v1/webhook-endpoints", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def verified(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def test_events_are_signed_carry_the_mailbox_and_increasing_sequences(
    web: WebContext, api: Api, receiver: Receiver, receiving: str, worker_ctx: dict[str, Any]
) -> None:
    endpoint = await subscribe(api, receiving)
    assert endpoint["secret"].startswith("whsec_")
    mailbox_id = await mailbox(web)
    for event in (Event.OPS_DISCONNECT, Event.OPS_RETRY_NOW):
        await operator_action(web.runtime.sessionmaker, web.runtime.events, mailbox_id, event, "operator:ops", None)
    assert await deliver_all(web, worker_ctx) == ["delivered"] * 3
    payloads = [verified(endpoint["secret"], r) for r in receiver.received]
    assert [p["type"] for p in payloads] == ["mailbox.connected", "mailbox.state_changed", "mailbox.state_changed"]
    data = [p["data"] for p in payloads]
    assert [d["mailbox_id"] for d in data] == [mailbox_id] * 3
    assert (data[1]["from_state"], data[1]["to_state"], data[1]["event"]) == (
        "healthy",
        "disconnected",
        "ops_disconnect",
    )
    assert data[0]["user_email"] == "owner@example.test"
    assert data[0]["address"] == "ana@gmail.test"
    sequences = [d["sequence"] for d in data]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 3
    async with web.runtime.sessionmaker() as session:
        assert (await session.scalars(select(Notification))).all() == []  # TOKENWARDEN_USER_EMAILS=off


async def test_a_failing_receiver_gets_the_same_event_each_try_then_never_again(
    web: WebContext, api: Api, receiver: Receiver, receiving: str, worker_ctx: dict[str, Any]
) -> None:
    receiver.statuses = [500, 500, 500]
    endpoint = await subscribe(api, receiving, ["mailbox.connected"])
    await mailbox(web)
    results = []
    for _ in range(6):
        results += await deliver_all(web, worker_ctx)
    assert results == ["retry", "retry", "retry", "delivered"]
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 4
    assert len(ids) == 1
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1
    for received in receiver.received:
        verified(endpoint["secret"], received)
    async with web.runtime.sessionmaker() as session:
        row = (await session.scalars(select(WebhookDelivery))).one()
        endpoint_row = (await session.scalars(select(WebhookEndpoint))).one()
    assert (row.status, row.attempts) == ("delivered", 4)
    assert endpoint_row.failing_since is None


async def test_a_change_that_rolls_back_leaves_no_event(web: WebContext, api: Api, receiving: str) -> None:
    await subscribe(api, receiving)
    mailbox_id = await mailbox(web)

    async def disconnect_then_fail() -> None:
        async with web.runtime.sessionmaker() as session, session.begin():
            row = await lock_mailbox(session, mailbox_id)
            occurrence = Occurrence(at=datetime.now(UTC), actor="test")
            await apply_event(session, row, Event.OPS_DISCONNECT, occurrence, web.runtime.events)
            raise RuntimeError("the transaction fails after the event was applied")

    with pytest.raises(RuntimeError):
        await disconnect_then_fail()
    async with web.runtime.sessionmaker() as session:
        types = (await session.scalars(select(WebhookDelivery.type))).all()
    assert types == ["mailbox.connected"]


async def test_endpoints_are_listed_without_secrets_rotated_deleted_and_validated(
    web: WebContext, api: Api, receiving: str
) -> None:
    client = api()
    endpoint = await subscribe(api, receiving, ["mailbox.removed"])
    async with web.runtime.sessionmaker() as session:
        stored = (await session.scalars(select(WebhookEndpoint))).one()
    assert endpoint["secret"].encode() not in stored.secret_ciphertext
    listed = (await client.get("/v1/webhook-endpoints")).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in json.dumps(listed)
    rotated = (await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")).json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != endpoint["secret"]
    assert (await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/enable")).json()["enabled"] is True
    for body in ({"url": receiving, "events": []}, {"url": receiving, "events": ["mailbox.exploded"]},
                 {"url": "ftp://example.test/", "events": ["mailbox.removed"]}, {"events": ["mailbox.removed"]},
                 {"url": "https://user:pw@example.test/", "events": ["mailbox.removed"]}):  # fmt: skip
        response = await client.post("/v1/webhook-endpoints", json=body)
        assert response.status_code == 422, body
    assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 204
    assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 404
    assert (await client.get("/v1/webhook-endpoints")).json()["data"] == []


async def test_a_receiver_at_a_private_address_is_refused_unless_allowed(
    web: WebContext, api: Api, receiver: Receiver, receiving: str, worker_ctx: dict[str, Any]
) -> None:
    await subscribe(api, "http://hooks.example.test/hooks", ["mailbox.connected"])
    await mailbox(web)
    strict = {**worker_ctx, "runtime": _strict(web)}
    for answer in (["10.0.0.5"], ["169.254.169.254"], ["::ffff:127.0.0.1"], ["127.0.0.1"], ["8.8.8.8", "192.168.1.1"]):

        async def resolver(host: str, port: int, answer: list[str] = answer) -> list[str]:
            assert (host, port) == ("hooks.example.test", 80)
            return answer

        assert await deliver_all(web, {**strict, "webhook_resolver": resolver}) == ["retry"]
        async with web.runtime.sessionmaker() as session:
            error = await session.scalar(select(WebhookDelivery.last_error))
        assert error is not None
        assert error.startswith("refused:")
    assert receiver.received == []
    port = int(receiving.rsplit(":", 1)[1].split("/")[0])

    async def to_receiver(host: str, port_asked: int) -> list[str]:
        return ["127.0.0.1"]

    # allowed (the demo and these tests): the checked address is the one connected to, the name is kept as Host
    async with web.runtime.sessionmaker() as session, session.begin():
        row = (await session.scalars(select(WebhookEndpoint))).one()
        row.url = f"http://hooks.example.test:{port}/hooks"
    assert await deliver_all(web, {**worker_ctx, "webhook_resolver": to_receiver}) == ["delivered"]
    assert receiver.received[0].headers["host"] == f"hooks.example.test:{port}"


def _strict(web: WebContext) -> Runtime:
    """The same resources with TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE off (production's default)."""
    return replace(web.runtime, settings=replace(web.runtime.settings, webhook_allow_private=False))


async def test_creating_an_endpoint_at_a_private_ip_is_refused_when_not_allowed(web: WebContext, api_key: str) -> None:
    strict = WebContext(_strict(web), web.redis, web.signing)
    strict_app = create_app(strict.runtime.settings, context=strict)
    transport = httpx.ASGITransport(app=strict_app)
    async with httpx.AsyncClient(transport=transport, base_url=web.base_url) as client:
        for url in ("http://127.0.0.1/hooks", "http://[::ffff:10.0.0.1]/", "http://169.254.169.254/"):
            response = await client.post(
                "/v1/webhook-endpoints", json={"url": url, "events": ["mailbox.connected"]},
                headers={"authorization": f"Bearer {api_key}"},
            )  # fmt: skip
            assert response.status_code == 422, url


async def test_a_provider_incident_opening_and_closing_is_announced(
    web: WebContext, api: Api, receiver: Receiver, receiving: str, worker_ctx: dict[str, Any]
) -> None:
    endpoint = await subscribe(api, receiving, ["provider_incident.opened", "provider_incident.closed"])
    rules = IncidentThresholds(min_mailboxes=1)
    guard = IncidentGuard(rules)
    failure = Verdict(FailureKind.TRANSIENT, "http_503", "Google answered 503.")
    mailbox_id = await mailbox(web)
    async with web.runtime.sessionmaker() as session, session.begin():
        opened_at = datetime.now(UTC)
        assert await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=failure, at=opened_at)
    async with web.runtime.sessionmaker() as session, session.begin():
        await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=None, at=datetime.now(UTC))
        await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=None, at=datetime.now(UTC))
    later = datetime.now(UTC) + timedelta(seconds=rules.window_seconds + 1)
    async with web.runtime.sessionmaker() as session, session.begin():
        await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=None, at=later)
    assert await close_recovered(web.runtime.sessionmaker, rules, later) != []
    assert await deliver_all(web, worker_ctx) == ["delivered", "delivered"]
    opened, closed = (verified(endpoint["secret"], r) for r in receiver.received)
    assert opened["type"] == "provider_incident.opened"
    assert (opened["data"]["provider"], opened["data"]["code"], opened["data"]["closed_at"]) == ("google", None, None)
    assert opened["data"]["cause"]
    assert closed["type"] == "provider_incident.closed"
    assert closed["data"]["closed_at"] is not None


async def test_an_endpoint_failing_for_too_long_is_disabled_and_re_enabled_through_the_api(
    web: WebContext, api: Api, receiver: Receiver, receiving: str, worker_ctx: dict[str, Any]
) -> None:
    receiver.statuses = [500]
    endpoint = await subscribe(api, receiving, ["mailbox.connected"])
    await mailbox(web)
    days = web.runtime.settings.webhook_disable_after_days
    async with web.runtime.sessionmaker() as session, session.begin():
        row = (await session.scalars(select(WebhookEndpoint))).one()
        row.failing_since = datetime.now(UTC) - timedelta(days=days, seconds=1)
    assert await deliver_all(web, worker_ctx) == ["retry"]
    shown = (await api().get("/v1/webhook-endpoints")).json()["data"][0]
    assert shown["enabled"] is False
    assert await deliver_all(web, worker_ctx) == []  # nothing is sent to a disabled endpoint
    assert (await api().post(f"/v1/webhook-endpoints/{endpoint['id']}/enable")).json()["enabled"] is True
    assert await deliver_all(web, worker_ctx) == ["delivered"]
