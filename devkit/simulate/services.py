"""The servers one simulation needs: PostgreSQL, Redis, an SMTP sink, and the real worker as a subprocess.

Why a subprocess for the worker: the simulation must measure the pipeline that runs in production
(`tokenwarden worker`: due-scan, refresh jobs, incident guard, outbox delivery), and web/ never
imports jobs/. Every server is a context manager that stops what it started, also on Ctrl-C, and
the worker is told to die with this process (PR_SET_PDEATHSIG), so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser

from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devkit.embedded import start_embedded_postgres, start_embedded_redis
from statemachine.services.settings import database_url
from statemachine.store.migrations import migrate


class SimulationError(RuntimeError):
    """The simulation could not run (a server did not start, the worker died); the message says why."""


@contextlib.asynccontextmanager
async def postgres_admin(env: Mapping[str, str]) -> AsyncIterator[str]:
    """A superuser URL: DATABASE_URL's server (each scenario gets its own database there), else an embedded one."""
    if url := env.get("DATABASE_URL"):
        yield database_url(url)
        return
    with start_embedded_postgres() as url:
        yield url


async def _execute(admin_url: str, statement: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, scenario: str) -> AsyncIterator[str]:
    """A new, migrated database for one scenario, dropped afterwards."""
    name = f"tw_sim_{scenario.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    await _execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        await migrate(url)
        yield url
    finally:
        await _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def fresh_redis(env: Mapping[str, str]) -> AsyncIterator[str]:
    """An empty Redis: REDIS_URL's database emptied (FLUSHDB), else a new embedded server.

    Leftover jobs of the previous scenario would name mailbox ids that exist again in the next one.
    """
    url = env.get("REDIS_URL")
    if not url:
        with start_embedded_redis() as embedded:
            yield embedded
        return
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield url


@dataclass
class SmtpSink:
    """Accepts every message and notes when each Message-ID first arrived: the user's notice time ends there."""

    url: str = ""
    delivered: dict[str, datetime] = field(default_factory=dict)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        headers = BytesHeaderParser().parsebytes(envelope.original_content or b"")
        if message_id := headers.get("Message-ID"):
            self.delivered.setdefault(str(message_id).strip(), datetime.now(UTC))
        return "250 OK"


@contextlib.asynccontextmanager
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """An SMTP server on 127.0.0.1 (a free port) that accepts all mail; `url` is its smtp:// URL."""
    loop = asyncio.get_running_loop()
    sink = SmtpSink()
    server = await loop.create_server(lambda: SMTP(sink, hostname="smtp.simulate.test", loop=loop), "127.0.0.1", 0)
    sink.url = f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield sink
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
