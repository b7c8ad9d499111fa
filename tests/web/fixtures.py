"""Fixtures of the web app on the real test database and Redis, driven through httpx's ASGITransport.

ASGITransport runs no lifespan, so the app gets its resources injected (`create_app(settings, context)`),
opened here on the test's own event loop. Each `browser()` is a separate cookie jar: one per person.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from statemachine.services.runtime import open_runtime
from statemachine.services.settings import load_settings
from tests.web.support import OWNER, SECRET_KEY, Browser, SignIn, add_user, login_link, use_link
from web.app import create_app
from web.pages import WebContext
from web.signing import Signing


@pytest.fixture
def web_overrides() -> dict[str, str]:
    """Extra environment for the app under test; test modules override this fixture."""
    return {}


@pytest.fixture
def web_env(env: dict[str, str], redis_url: str, web_overrides: dict[str, str]) -> dict[str, str]:
    return {**env, "TOKENWARDEN_SECRET_KEY": SECRET_KEY, "REDIS_URL": redis_url, **web_overrides}


@pytest.fixture
async def web(web_env: dict[str, str]) -> AsyncIterator[WebContext]:
    settings = load_settings(web_env)
    async with open_runtime(settings) as runtime:
        redis = Redis.from_url(settings.redis_url)
        try:
            yield WebContext(runtime, redis, Signing(SECRET_KEY))
        finally:
            await redis.aclose()


@pytest.fixture
def app(web: WebContext) -> Starlette:
    return create_app(web.runtime.settings, context=web)


@pytest.fixture
async def browser(app: Starlette, web: WebContext) -> AsyncIterator[Browser]:
    """Factory of clients with their own cookies, as separate browsers would be."""
    clients: list[httpx.AsyncClient] = []

    def new() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=web.base_url)
        clients.append(client)
        return client

    yield new
    for client in clients:
        await client.aclose()


@pytest.fixture
def sign_in(web: WebContext, browser: Browser) -> SignIn:
    async def sign_in(email: str = OWNER, *, admin: bool = False) -> httpx.AsyncClient:
        await add_user(web, email, admin=admin)
        client = browser()
        response = await use_link(client, await login_link(web, email))
        assert response.status_code == 303, response.text
        return client

    return sign_in
