"""Fixtures of the worker's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from tests.database import service_environment
from tests.jobs.support import Sandbox


@pytest.fixture
async def runtime(database_url: str, redis_url: str, sandbox: Sandbox) -> AsyncIterator[Runtime]:
    """The service's runtime on the test database and Redis, with Google's token endpoint the module's `sandbox`."""
    env = service_environment(database_url, GOOGLE_TOKEN_URL=sandbox.token_url, REDIS_URL=redis_url)
    async with open_runtime(load_settings(env)) as rt:
        yield rt
