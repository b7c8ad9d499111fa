"""Webhook delivery from its outbox: the `sweep_webhooks` cron and the `deliver_webhook` job.

As for emails (jobs/mail.py), PostgreSQL is the scheduler: the sweeper enqueues every due, unlocked
`pending` row of an enabled endpoint; the job claims it (lock + attempts+1), sends outside any
transaction and records the result, so a worker killed mid-delivery leaves a locked row that is
sent again once the lock lapses, with the same `webhook-id` and body.

Signed per Standard Webhooks with the `standardwebhooks` package (the reference implementation):
each attempt signs "{id}.{timestamp}.{body}" with its own timestamp. Before sending, the host is
resolved and every address checked (statemachine/core/addresses.py); the request then goes to the
checked address (Host header and TLS SNI keep the name), so a DNS answer cannot change between the
check and the connection. Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlunsplit

import httpx
from arq.worker import func
from sqlalchemy import func as sql, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from jobs.metrics import WEBHOOK_ENDPOINTS_DISABLED, WEBHOOKS
from jobs.sweep_ids import due_rows, sweep_job_id
from statemachine.core.addresses import WebhookUrlError, is_public, parse_webhook_url
from statemachine.services.runtime import Runtime
from statemachine.services.settings import Settings
from statemachine.services.webhook_endpoints import decrypt_secret
from statemachine.store.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

DELIVER_JOB = "deliver_webhook"
SWEEP_BATCH = 500
MAX_DELAY_SECONDS = 3600.0
LOCK_MARGIN_SECONDS = 5.0
USER_AGENT = "Tokenwarden-Webhooks/1"

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Claim:
    id: int
    endpoint_id: int
    message_id: str
    body: str
    attempts: int
    url: str
    secret_ciphertext: bytes
    give_up_at: datetime


class Refused(Exception):
    """The endpoint's URL or its resolved address is not one we send to; the message says why."""


def lock_seconds(settings: Settings) -> float:
    return settings.webhook_timeout_seconds * 2 + LOCK_MARGIN_SECONDS


def retry_delay_seconds(attempts: int, base: float, jitter: float) -> float:
    """Exponential from `base`, capped at an hour, with jitter (half to full of the step)."""
    step: float = base * 2.0 ** max(attempts - 1, 0)
    return min(MAX_DELAY_SECONDS, step) * (0.5 + jitter / 2)


def _unlocked() -> Any:
    return or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < sql.now())


def _sendable() -> tuple[Any, ...]:
    return (
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= sql.now(),
        _unlocked(),
        WebhookDelivery.endpoint_id == WebhookEndpoint.id,
        WebhookEndpoint.disabled_at.is_(None),
    )


async def due_deliveries(session: AsyncSession, limit: int = SWEEP_BATCH) -> list[tuple[int, int, float]]:
    """(id, attempts, seconds claimable) of due rows of enabled endpoints, oldest due first."""
    return await due_rows(session, WebhookDelivery, _sendable(), limit)


async def claim(session: AsyncSession, delivery_id: int, seconds: float) -> Claim | None:
    statement = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, *_sendable())
        .values(locked_until=sql.now() + timedelta(seconds=seconds), attempts=WebhookDelivery.attempts + 1)
        .returning(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret_ciphertext)
    )
    found = (await session.execute(statement)).one_or_none()
    if found is None:
        return None
    row: WebhookDelivery = found[0]
    return Claim(row.id, row.endpoint_id, row.message_id, row.body, row.attempts, found.url,
                 found.secret_ciphertext, row.give_up_at)  # fmt: skip


async def target_of(url: str, resolver: Resolver, *, allow_private: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to connect to (the checked address), the Host header, and the TLS server name."""
    try:
        parts = parse_webhook_url(url, allow_private=allow_private)
    except WebhookUrlError as err:
        raise Refused(str(err)) from None
    assert parts.hostname is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolver(parts.hostname, port)
    except OSError:
        raise Refused(f"{parts.hostname} does not resolve") from None
    if not addresses:
        raise Refused(f"{parts.hostname} does not resolve")
    if not allow_private and not all(is_public(a) for a in addresses):
        raise Refused(f"{parts.hostname} resolves to a loopback, private or link-local address")
    address = addresses[0]
    host = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return target, {"host": parts.netloc}, extensions


async def send(
    http: httpx.AsyncClient, resolver: Resolver, claimed: Claim, secret: str, settings: Settings
) -> str | None:
    """One attempt; None when the endpoint answered 2xx, else what went wrong (never the secret)."""
    try:
        target, headers, extensions = await target_of(
            claimed.url, resolver, allow_private=settings.webhook_allow_private
        )
    except Refused as err:
        return f"refused: {err}"
    now = datetime.now(UTC)
    headers |= {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": claimed.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(claimed.message_id, now, claimed.body),
    }
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            response = await http.post(target, content=claimed.body.encode(), headers=headers, extensions=extensions)
    except TimeoutError:
        return f"timed out after {settings.webhook_timeout_seconds:g} s"
    except httpx.HTTPError as err:
        return f"could not deliver: {type(err).__name__}"
    return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"


async def _own(session: AsyncSession, claimed: Claim, **values: Any) -> bool:
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempts == claimed.attempts,
        )
        .values(locked_until=None, **values)
        .returning(WebhookDelivery.id)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


async def record_success(session: AsyncSession, claimed: Claim) -> None:
    await _own(session, claimed, status="delivered", delivered_at=sql.now(), last_error=None)
    await session.execute(
        update(WebhookEndpoint).where(WebhookEndpoint.id == claimed.endpoint_id).values(failing_since=None)
    )


async def record_failure(session: AsyncSession, claimed: Claim, error: str, settings: Settings) -> str:
    """Failed for good after the retry window, else back to the sweeper later; disable a long-failing endpoint."""
    now = datetime.now(UTC)
    if now >= claimed.give_up_at:
        result = "failed"
        await _own(session, claimed, status="failed", last_error=f"gave up after {claimed.attempts} attempts: {error}")
    else:
        result = "retry"
        delay = retry_delay_seconds(claimed.attempts, settings.webhook_retry_base_seconds, random.random())
        await _own(session, claimed, next_attempt_at=now + timedelta(seconds=delay), last_error=error)
    endpoint = await session.get(WebhookEndpoint, claimed.endpoint_id, with_for_update=True)
    if endpoint is not None and endpoint.disabled_at is None:
        endpoint.failing_since = endpoint.failing_since or now
        if now - endpoint.failing_since >= timedelta(days=settings.webhook_disable_after_days):
            endpoint.disabled_at = now
            WEBHOOK_ENDPOINTS_DISABLED.inc()
            logger.error(
                "webhook endpoint disabled",
                extra={"endpoint_id": endpoint.id, "failing_since": endpoint.failing_since.isoformat()},
            )
    return result


async def deliver_webhook(ctx: Mapping[str, Any], delivery_id: int) -> str:
    """Claim, send, record: "delivered", "retry", "failed", or "skipped" (not due, or another job has it)."""
    runtime: Runtime = ctx["runtime"]
    settings = runtime.settings
    async with runtime.sessionmaker() as session, session.begin():
        claimed = await claim(session, delivery_id, lock_seconds(settings))
    if claimed is None:
        return "skipped"
    secret = decrypt_secret(runtime.cipher, claimed.endpoint_id, claimed.secret_ciphertext)
    error = await send(ctx["webhook_http"], ctx.get("webhook_resolver", system_resolver), claimed, secret, settings)
    async with runtime.sessionmaker() as session, session.begin():
        if error is None:
            await record_success(session, claimed)
            result = "delivered"
        else:
            result = await record_failure(session, claimed, error, settings)
    WEBHOOKS.labels(result=result).inc()
    level = logging.INFO if error is None else logging.WARNING
    extra = {"delivery_id": claimed.id, "endpoint_id": claimed.endpoint_id, "attempt": claimed.attempts}
    logger.log(level, "webhook %s", result, extra={**extra, "error": error})
    return result


async def sweep_webhooks(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Enqueue a delivery job for every due row: new ones, retries, and rows whose worker died (jobs/sweep_ids.py)."""
    runtime: Runtime = ctx["runtime"]
    async with runtime.sessionmaker() as session:
        due = await due_deliveries(session)
    stale = lock_seconds(runtime.settings)
    enqueued = 0
    for delivery_id, attempts, waited in due:
        jid = sweep_job_id(f"webhook:{delivery_id}:{attempts}", waited, stale)
        job = await ctx["redis"].enqueue_job(DELIVER_JOB, delivery_id, _job_id=jid)
        enqueued += job is not None
    return {"due": len(due), "enqueued": enqueued}


def make_client(settings: Settings) -> httpx.AsyncClient:
    """httpx's own transport (not the aiohttp one): it honours the `sni_hostname` extension; no redirects."""
    return httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False)


functions = [func(deliver_webhook, name=DELIVER_JOB, keep_result=0, max_tries=3, timeout=120)]
