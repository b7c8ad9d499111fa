"""Helpers for the /v1 tests: mailboxes whose refresh token the sandbox knows, with or without a valid access token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from statemachine.store.models import Mailbox
from tests.web.support import mailbox, now
from web.pages import WebContext


async def granted_mailbox(
    web: WebContext, google: httpx.AsyncClient, *, address: str = "ana@gmail.test", rotate: bool = False,
    token_seconds: float | None = None, **state: Any,
) -> int:  # fmt: skip
    """A mailbox whose refresh token the sandbox honours; `token_seconds`: a stored access token lasting that long."""
    mailbox_id = await mailbox(web, address=address, **state)
    refresh_token = "1//refresh-SECRET-" + address
    grant = {"email": "ana@gmail.test", "refresh_token": refresh_token, "rotate": rotate}
    (await google.post("/_sandbox/tokens", json=grant)).raise_for_status()
    if token_seconds is not None:
        await store_access_token(web, mailbox_id, "ya29.stored-SECRET", token_seconds)
    return mailbox_id


async def store_access_token(web: WebContext, mailbox_id: int, token: str, seconds: float) -> None:
    ciphertext = web.runtime.cipher.encrypt(token, mailbox_id=mailbox_id, role="access")
    expires_at = now() + timedelta(seconds=seconds)
    async with web.runtime.sessionmaker() as session, session.begin():
        values = {"access_token_ciphertext": ciphertext, "access_token_expires_at": expires_at}
        await session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(**values))


async def token_requests(google: httpx.AsyncClient) -> int:
    total: int = (await google.get("/_sandbox/requests")).json()["by_grant_type"].get("refresh_token", 0)
    return total
