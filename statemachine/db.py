"""Engine and session factory: one engine per process, sessions that keep attributes after commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

Sessionmaker = async_sessionmaker[AsyncSession]


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> Sessionmaker:
    # expire_on_commit=False: reading a committed row's attributes must not trigger async lazy IO
    return async_sessionmaker(engine, expire_on_commit=False)
