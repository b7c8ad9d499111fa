"""Bearer authentication for /v1: API keys only (no cookie, no CSRF token; a browser session is no use here)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from web.pages import context_of
from web.v1.errors import unauthorized
from web.v1.keys import KeyHolder, key_holder

MAX_KEY_LENGTH = 200


async def require_key(request: Request) -> KeyHolder:
    """The key holder of this request; 401 (and nothing else) for a missing, malformed, wrong or revoked key."""
    async with context_of(request).runtime.sessionmaker() as session, session.begin():
        return await require_key_in(session, request)


async def require_key_in(session: AsyncSession, request: Request) -> KeyHolder:
    """The same check inside the caller's transaction (the access-token route's one-transaction common case)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_LENGTH:
        raise unauthorized()
    holder = await key_holder(session, key, datetime.now(UTC))
    if holder is None:
        raise unauthorized()
    return holder
