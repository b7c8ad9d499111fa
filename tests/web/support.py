"""Helpers for the web tests: users, sign-in links, mailboxes in a given state, CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, update

from statemachine import accounts
from statemachine.models import Mailbox, User
from tests.factories import add_mailbox
from web.auth import create_login_link
from web.pages import WebContext

SECRET_KEY = "tw-test-session-secret-0123456789-abcdef-DO-NOT-LEAK"
OWNER, OTHER, ADMIN = "owner@example.test", "other@example.test", "admin@example.test"
Browser = Callable[[], httpx.AsyncClient]
SignIn = Callable[..., Awaitable[httpx.AsyncClient]]


async def add_user(web: WebContext, email: str, *, admin: bool = False) -> int:
    async with web.runtime.sessionmaker() as session, session.begin():
        existing = await session.scalar(select(User.id).where(User.email == email))
        if existing is not None:
            return existing
        return (await accounts.add_user(session, email, None, admin=admin)).id


async def login_link(web: WebContext, email: str, minutes: int = 15) -> str:
    return await create_login_link(web.runtime.sessionmaker, web.signing, web.base_url, email, minutes)


async def use_link(client: httpx.AsyncClient, link: str) -> httpx.Response:
    """Open the link, then press "Continue" (the POST that starts the session)."""
    page = await client.get(link)
    assert page.status_code == 200, page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    return await client.post("/login", data={"token": token.group(1)})


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    page = await client.get(path)
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert found is not None, page.text
    return found.group(1)


async def mailbox(web: WebContext, *, user: str = OWNER, address: str = "ana@gmail.test", **state: Any) -> int:
    """Connect a mailbox for `user`, then set its row's state columns as given."""
    mailbox_id = await add_mailbox(web.runtime, "1//refresh-SECRET-" + address, user=user, address=address)
    if state:
        if "state" in state:
            state.setdefault("is_active", state["state"] != "disconnected")
        async with web.runtime.sessionmaker() as session, session.begin():
            await session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(**state))
    return mailbox_id


async def row(web: WebContext, mailbox_id: int) -> Mailbox:
    async with web.runtime.sessionmaker() as session:
        found = await session.get(Mailbox, mailbox_id)
        assert found is not None
        return found


def now() -> datetime:
    return datetime.now(UTC)
