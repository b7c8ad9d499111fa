"""Fixtures for the /v1 tests: an API key, a client that sends it, and the sandbox Google as the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette

from devkit.serving import RunningServer
from web.pages import WebContext
from web.v1.keys import create_key

ANA = {"email": "ana@gmail.test", "sub": "104400000000000000001"}
KEY_NAME = "mailsync"
Api = Callable[..., httpx.AsyncClient]


@pytest.fixture
def web_overrides(sandbox: RunningServer) -> dict[str, str]:
    return {"GOOGLE_AUTH_URL": f"{sandbox.url}/authorize", "GOOGLE_TOKEN_URL": f"{sandbox.url}/token"}


@pytest.fixture
async def google(sandbox: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's control API, reset, with Ana's account."""
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=5) as client:
        (await client.post("/_sandbox/reset")).raise_for_status()
        (await client.post("/_sandbox/accounts", json=ANA)).raise_for_status()
        yield client


@pytest.fixture
async def api_key(web: WebContext) -> str:
    async with web.runtime.sessionmaker() as session, session.begin():
        return await create_key(session, KEY_NAME)


@pytest.fixture
async def api(app: Starlette, web: WebContext, api_key: str) -> AsyncIterator[Api]:
    """Factory of API clients: with the test's key by default, or with the given Authorization header (or none)."""
    clients: list[httpx.AsyncClient] = []

    def new(authorization: str | None = f"Bearer {api_key}") -> httpx.AsyncClient:
        headers = {"authorization": authorization} if authorization is not None else {}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=web.base_url, headers=headers)
        clients.append(client)
        return client

    yield new
    for client in clients:
        await client.aclose()
