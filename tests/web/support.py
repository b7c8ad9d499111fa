"""Helpers for the web tests: users, sign-in links, mailboxes in a given state, CSRF tokens."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from statemachine.services import accounts
from statemachine.store.models import Mailbox, User
from tests.factories import add_mailbox
from web.auth import create_login_link
from web.pages import WebContext

ROOT = Path(__file__).resolve().parents[2]
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


async def mailbox(
    web: WebContext, *, user: str = OWNER, address: str = "ana@gmail.test", provider: str = "google", **state: Any
) -> int:
    """Connect a mailbox for `user`, then set its row's state columns as given."""
    token = "1//refresh-SECRET-" + address
    mailbox_id = await add_mailbox(web.runtime, token, user=user, address=address, provider=provider)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serving(web_env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`tokenwarden serve` in a subprocess, as an operator runs it, logging to `log`; returns its URL once it answers.

    A file, not a pipe: nobody reads a pipe while the test runs, and a full one would block the server.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **web_env, "TOKENWARDEN_BASE_URL": url}
    command = [sys.executable, "-m", "statemachine.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return url, process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"tokenwarden serve did not start:\n{log.read_text(errors='replace')}")


def stop_serving(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
