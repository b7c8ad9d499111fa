"""Migrations up and down on an empty database, and what the schema itself guarantees."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from statemachine.migrations import current_revision, migrate

TABLES = {"users", "mailboxes", "mailbox_state_transitions", "notifications"}


async def tables(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("select tablename from pg_tables where schemaname = 'public'"))
            return {name for (name,) in rows} - {"alembic_version"}
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_on_an_empty_database(make_database) -> None:
    url = make_database("mig")
    assert await current_revision(url) is None
    await migrate(url)
    assert await tables(url) == TABLES
    assert await current_revision(url) == "0001"
    await migrate(url, "downgrade", "base")
    assert await tables(url) == set()
    assert await current_revision(url) is None
    await migrate(url)
    assert await tables(url) == TABLES


async def test_the_original_plan_columns_and_partial_index_exist(database_url) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.connect() as conn:
        columns = dict(
            (await conn.execute(text(
                "select column_name, data_type || ':' || coalesce(column_default, '') from information_schema.columns"
                " where table_name = 'mailboxes' and column_name like 'token_refresh_%'"
            ))).all()
        )  # fmt: skip
        index = await conn.scalar(
            text("select indexdef from pg_indexes where indexname = 'idx_mailboxes_token_refresh_failed'")
        )
    await engine.dispose()
    assert columns == {
        "token_refresh_failed_at": "timestamp with time zone:",
        "token_refresh_error": "text:",
        "token_refresh_attempt_count": "integer:0",
    }
    assert "WHERE (token_refresh_failed_at IS NOT NULL)" in index


async def seed_history(conn) -> None:  # type: ignore[no-untyped-def]
    await conn.execute(text("insert into users (email) values ('a@example.test')"))
    await conn.execute(
        text(
            "insert into mailboxes (user_id, provider, address, refresh_token_ciphertext)"
            " values (1, 'google', 'a@gmail.test', 'x')"
        )
    )
    await conn.execute(
        text(
            "insert into mailbox_state_transitions (mailbox_id, event, from_state, to_state, reason, actor)"
            " values (1, 'ops_disconnect', 'healthy', 'disconnected', 'r', 'operator:a')"
        )
    )


@pytest.mark.parametrize(
    "statement", ["update mailbox_state_transitions set reason = 'rewritten'", "delete from mailbox_state_transitions"]
)
async def test_history_is_append_only(database_url, statement: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await seed_history(conn)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        assert await conn.scalar(text("select reason from mailbox_state_transitions")) == "r"
    await engine.dispose()


async def test_state_and_is_active_cannot_disagree(database_url) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await seed_history(conn)
    with pytest.raises(IntegrityError, match="active_matches_state"):
        async with engine.begin() as conn:
            await conn.execute(text("update mailboxes set state = 'disconnected'"))
    with pytest.raises(IntegrityError, match="ck_mailboxes_state"):
        async with engine.begin() as conn:
            await conn.execute(text("update mailboxes set state = 'asleep'"))
    await engine.dispose()
