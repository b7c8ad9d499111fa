"""Engine and session factory: one engine per process, sessions that keep attributes after commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

Sessionmaker = async_sessionmaker[AsyncSession]


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """A pooled engine. Pre-ping (a round trip per checkout) hides a database restart from web
    requests; the worker turns it off: it checks out several connections per refresh, and a cycle
    broken by a restart rolls back and is retried once its lease runs out. Recycling bounds their age."""
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping, pool_recycle=900
    )


def make_sessionmaker(engine: AsyncEngine) -> Sessionmaker:
    # expire_on_commit=False: reading a committed row's attributes must not trigger async lazy IO
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def open_sessionmaker(url: str, *, pool_size: int = 1) -> AsyncIterator[Sessionmaker]:
    """Sessions on an engine of their own, disposed of on the way out: one CLI command's database."""
    engine = make_engine(url, pool_size=pool_size)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
