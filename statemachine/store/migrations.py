"""Run the alembic migrations in alembic/ from code (the CLI, the demo and the tests share this)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import command, op

ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    return config


def set_provider_check(providers: Sequence[str]) -> None:
    """Inside a migration: let `mailboxes.provider` take exactly these names (the migrations that follow the
    registry, docs/providers.md). Fails, changing nothing, while a row names another provider."""
    op.execute("SET LOCAL lock_timeout = '5s'")
    names = ", ".join(f"'{name}'" for name in providers)
    op.execute(
        "ALTER TABLE mailboxes DROP CONSTRAINT ck_mailboxes_provider, "
        f"ADD CONSTRAINT ck_mailboxes_provider CHECK (provider IN ({names}))"
    )


def _run(connection: Connection, direction: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def migrate(url: str, direction: str = "upgrade", revision: str = "head") -> None:
    """Upgrade (or downgrade) the database at `url` inside one transaction."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run, direction, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()
