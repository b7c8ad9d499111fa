"""Alembic environment: migrate a connection handed in by `statemachine.store.migrations`, or DATABASE_URL."""

import asyncio
import os

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from statemachine.services.settings import database_url
from statemachine.store.models import Base
from web import tables as web_tables  # noqa: F401  (registers the web app's tables on Base.metadata)

config = context.config
target_metadata = Base.metadata


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL", "")
    asyncio.run(run_async_migrations(database_url(url)))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `tokenwarden migrate`")
run_migrations_online()
