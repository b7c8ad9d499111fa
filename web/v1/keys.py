"""API keys: created, listed and revoked by operators; checked on every /v1 request.

A key is `tw_` and 43 random url-safe characters. Keys are high-entropy, so a plain SHA-256 of the key
is enough to store and to look it up by (no slow hash needed: nothing to brute-force). `last_used_at`
is written at most once a minute per key, not on every request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from web.signing import hash_secret
from web.tables import ApiKey

KEY_PREFIX = "tw_"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6
LAST_USED_EVERY = timedelta(minutes=1)
MAX_NAME_LENGTH = 64


class ApiKeyError(ValueError):
    """A name that cannot be used, or a key that does not exist; the message says which."""


@dataclass(frozen=True)
class KeyHolder:
    """Who sent this request: the name of the key (the actor in history and audit rows)."""

    key_id: int
    name: str


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ApiKeyError(f"a key name is 1 to {MAX_NAME_LENGTH} printable characters")
    return name


async def create_key(session: AsyncSession, name: str) -> str:
    """Store a new key under `name` and return it: the only time it is ever shown."""
    key = new_key()
    row = ApiKey(name=_valid_name(name), prefix=key[:SHOWN_PREFIX_LENGTH], key_hash=hash_secret(key))
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise ApiKeyError(f"a key named {name.strip()!r} already exists") from None
    return key


async def revoke_key(session: AsyncSession, name: str, now: datetime) -> None:
    statement = update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
    if (await session.execute(statement.returning(ApiKey.id))).scalar_one_or_none() is None:
        raise ApiKeyError(f"no live key named {name!r}")


async def list_keys(session: AsyncSession) -> list[dict[str, Any]]:
    columns = (ApiKey.name, ApiKey.prefix, ApiKey.created_at, ApiKey.last_used_at, ApiKey.revoked_at)
    rows = await session.execute(select(*columns).order_by(ApiKey.id))
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r._mapping.items()} for r in rows]


async def key_holder(session: AsyncSession, key: str, now: datetime) -> KeyHolder | None:
    """The live key's holder, or None for an unknown or revoked key; notes the use at most once a minute."""
    if not key.startswith(KEY_PREFIX):
        return None
    statement = select(ApiKey.id, ApiKey.name, ApiKey.last_used_at).where(
        ApiKey.key_hash == hash_secret(key), ApiKey.revoked_at.is_(None)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    if row.last_used_at is None or row.last_used_at <= now - LAST_USED_EVERY:
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return KeyHolder(row.id, row.name)
