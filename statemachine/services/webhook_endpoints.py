"""Webhook endpoints: created with a `whsec_` secret shown once, listed, deleted, re-enabled, secret rotated.

The secret is stored encrypted under TOKENWARDEN_ENCRYPTION_KEYS (bound to its endpoint's id, as a
token is to its mailbox's) and re-encrypted by `rotate-keys`.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.addresses import parse_webhook_url
from statemachine.core.secrets import TokenCipher
from statemachine.store.models import WEBHOOK_EVENT_TYPES, WebhookEndpoint

SECRET_PREFIX = "whsec_"
SECRET_ROLE = "webhook-secret"
SECRET_BYTES = 32


class UnknownEndpointError(LookupError):
    def __init__(self, endpoint_id: int) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id}")


class EndpointInputError(ValueError):
    """A URL or event list that cannot be used; the message says why."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def event_types(value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise EndpointInputError(f"events is a non-empty list of event types: {', '.join(WEBHOOK_EVENT_TYPES)}")
    unknown = sorted(set(value) - set(WEBHOOK_EVENT_TYPES))
    if unknown:
        raise EndpointInputError(f"unknown event types {unknown}; known: {', '.join(WEBHOOK_EVENT_TYPES)}")
    return sorted(set(value))


def endpoint_json(row: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "enabled": row.disabled_at is None,
        "created_at": row.created_at.isoformat(),
        "failing_since": row.failing_since.isoformat() if row.failing_since else None,
        "disabled_at": row.disabled_at.isoformat() if row.disabled_at else None,
    }


async def create_endpoint(
    session: AsyncSession, cipher: TokenCipher, url: object, events: object, *, allow_private: bool
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (the only time the secret is returned)."""
    if not isinstance(url, str):
        raise EndpointInputError("url is a string")
    try:
        parse_webhook_url(url, allow_private=allow_private)
    except ValueError as err:
        raise EndpointInputError(f"url: {err}") from None
    types = event_types(events)
    endpoint_id = await session.scalar(select(func.nextval("webhook_endpoints_id_seq")))
    assert endpoint_id is not None
    secret = new_secret()
    row = WebhookEndpoint(
        id=endpoint_id, url=url, events=types,
        secret_ciphertext=cipher.encrypt(secret, mailbox_id=endpoint_id, role=SECRET_ROLE),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row, secret


async def get_endpoint(session: AsyncSession, endpoint_id: int, *, lock: bool = False) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id, with_for_update=lock)
    if row is None:
        raise UnknownEndpointError(endpoint_id)
    return row


async def list_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    return list((await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))).all())


async def delete_endpoint(session: AsyncSession, endpoint_id: int) -> None:
    """The endpoint and its pending and past deliveries (ON DELETE CASCADE)."""
    deleted = await session.execute(
        delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).returning(WebhookEndpoint.id)
    )
    if deleted.scalar_one_or_none() is None:
        raise UnknownEndpointError(endpoint_id)


async def rotate_secret(session: AsyncSession, cipher: TokenCipher, endpoint_id: int) -> str:
    """A new secret at once: deliveries from now on are signed with it."""
    secret = new_secret()
    ciphertext = cipher.encrypt(secret, mailbox_id=endpoint_id, role=SECRET_ROLE)
    statement = update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(secret_ciphertext=ciphertext)
    if (await session.execute(statement.returning(WebhookEndpoint.id))).scalar_one_or_none() is None:
        raise UnknownEndpointError(endpoint_id)
    return secret


async def enable_endpoint(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    """Re-enable a disabled endpoint; its failure clock starts afresh."""
    row = await get_endpoint(session, endpoint_id, lock=True)
    row.disabled_at, row.failing_since = None, None
    await session.flush()
    return row


def decrypt_secret(cipher: TokenCipher, endpoint_id: int, ciphertext: bytes) -> str:
    return cipher.decrypt(ciphertext, mailbox_id=endpoint_id, role=SECRET_ROLE)


async def rotate_endpoint_keys(session: AsyncSession, cipher: TokenCipher) -> int:
    """Re-encrypt every endpoint secret under the newest key (a small table: one transaction)."""
    rows = await list_endpoints(session)
    for row in rows:
        row.secret_ciphertext = cipher.rotate(row.secret_ciphertext)
    return len(rows)
