"""The adapter tests' shared edges: one real token client, and respx in front of it."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from statemachine.providers.oauth import make_http_client


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(5.0)
    yield client
    await client.aclose()


@pytest.fixture
def endpoint() -> Iterator[respx.MockRouter]:
    # using="httpx": respx's default (httpcore) mocker never sees requests that go through the aiohttp transport
    with respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=True) as router:
        yield router
