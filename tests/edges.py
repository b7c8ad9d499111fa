"""Fixtures for the service's edges: the provider (respx, or the sandbox Google over HTTP) and the job queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx
from arq.connections import ArqRedis, RedisSettings, create_pool

from devkit.sandbox import MICROSOFT, create_sandbox_app
from devkit.serving import RunningServer, serve_in_thread
from tests.database import CLIENT_ID, CLIENT_SECRET, MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, TOKEN_URL


@pytest.fixture
def provider() -> Iterator[respx.Route]:
    """The token endpoint, mocked at the httpx layer (the aiohttp transport bypasses httpcore):
    any request to another URL fails the test instead of reaching the network."""
    with respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock.post(TOKEN_URL)


@pytest.fixture
def sandbox() -> Iterator[RunningServer]:
    """The sandbox Google served over real HTTP on 127.0.0.1, fresh for each test, with the tests' client."""
    with serve_in_thread(create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)) as running:
        yield running


@pytest.fixture
def microsoft_sandbox() -> Iterator[RunningServer]:
    """The sandbox Microsoft over real HTTP, fresh for each test; its endpoints are under /{tenant}/oauth2/v2.0/."""
    app = create_sandbox_app(client_id=MICROSOFT_CLIENT_ID, client_secret=MICROSOFT_CLIENT_SECRET, dialect=MICROSOFT)
    with serve_in_thread(app) as running:
        yield running


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    """An arq pool on the session's Redis, emptied first."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    await pool.flushdb()
    try:
        yield pool
    finally:
        await pool.aclose()
