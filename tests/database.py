"""Fixtures for tests that need the migrated schema: one database per session, emptied before each test.

Emptying with TRUNCATE (not a rolled-back outer transaction) because the code under test commits,
and end-to-end tests run the CLI in other processes that must see committed rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import Settings, load_settings
from statemachine.store.db import Sessionmaker
from statemachine.store.migrations import migrate
from statemachine.store.models import Base
from web import tables as web_tables  # noqa: F401  (registers the web app's tables on Base.metadata)

TEST_KEY = Fernet.generate_key().decode()
TOKEN_URL = "https://oauth2.test/token"
REVOKE_URL = "https://oauth2.test/revoke"
AUTH_URL = "https://accounts.test/o/oauth2/v2/auth"
CLIENT_ID = "tw-test-client.apps.test"
CLIENT_SECRET = "tw-test-client-secret-DO-NOT-LEAK"
MICROSOFT_TOKEN_URL = "https://login.test/common/oauth2/v2.0/token"
MICROSOFT_AUTH_URL = "https://login.test/common/oauth2/v2.0/authorize"
MICROSOFT_CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
MICROSOFT_CLIENT_SECRET = "tw-test-ms-secret-DO-NOT-LEAK"
TABLES = ", ".join(Base.metadata.tables)  # every table the migrations create


def service_environment(database_url: str, **overrides: str) -> dict[str, str]:
    """An environment for the service under test: fast retries, no minimum episode ages."""
    env = {
        "DATABASE_URL": database_url,
        "TOKENWARDEN_ENCRYPTION_KEYS": TEST_KEY,
        "GOOGLE_CLIENT_ID": CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "GOOGLE_TOKEN_URL": TOKEN_URL,
        "GOOGLE_REVOKE_URL": REVOKE_URL,  # no test may reach Google's real one
        "GOOGLE_AUTH_URL": AUTH_URL,
        "MICROSOFT_CLIENT_ID": MICROSOFT_CLIENT_ID,
        "MICROSOFT_CLIENT_SECRET": MICROSOFT_CLIENT_SECRET,
        "MICROSOFT_TOKEN_URL": MICROSOFT_TOKEN_URL,
        "MICROSOFT_AUTH_URL": MICROSOFT_AUTH_URL,
        "TOKENWARDEN_RETRY_BASE_SECONDS": "0",
        "TOKENWARDEN_RETRY_MAX_SECONDS": "1",
        "TOKENWARDEN_DEGRADE_MIN_AGE_SECONDS": "0",
        "TOKENWARDEN_DISCONNECT_MIN_AGE_SECONDS": "0",
        "TOKENWARDEN_HTTP_TIMEOUT_SECONDS": "2",
        "TOKENWARDEN_BASE_URL": "https://tokenwarden.test",
        "TOKENWARDEN_MAIL_FROM": "Tokenwarden <noreply@tokenwarden.test>",
    }
    env.update(overrides)
    return env


def _run(coro: object) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


async def _truncate(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def migrated_database(make_database) -> str:  # type: ignore[no-untyped-def]
    url: str = make_database("core")
    _run(migrate(url))
    return url


@pytest.fixture
def database_url(migrated_database: str) -> str:
    """The session's migrated database, empty at the start of the test."""
    _run(_truncate(migrated_database))
    return migrated_database


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return service_environment(database_url)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture
def sessionmaker(runtime: Runtime) -> Sessionmaker:
    return runtime.sessionmaker
