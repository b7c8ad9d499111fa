"""The cycle's statement pool on real PostgreSQL: bounded, lazy, replacing lost connections, never reusing a bad one."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from statemachine.store.statements import StatementPool, statement_pool
from tests.jobs.support import wait_until

PID = "select pg_backend_pid()"


def plain(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def backends(database_url: str) -> set[int]:
    """The server's backends for this database, but the one asking."""
    connection = await asyncpg.connect(plain(database_url))
    try:
        rows = await connection.fetch(
            "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        )
        return {row[0] for row in rows}
    finally:
        await connection.close()


async def until_gone(database_url: str, pid: int) -> None:
    async def gone() -> bool:
        return pid not in await backends(database_url)

    await wait_until(gone, 10, f"backend {pid} to end")


async def test_connections_open_when_first_needed_and_never_more_than_max_size(database_url: str) -> None:
    before = await backends(database_url)
    async with statement_pool(database_url, max_size=3) as pool:
        assert not await backends(database_url) - before  # nothing opened before the first statement
        pids = await asyncio.gather(*(pool.fetchval("select pg_backend_pid() from pg_sleep(0.05)") for _ in range(9)))
        again = {await pool.fetchval(PID) for _ in range(5)}

    assert len(set(pids)) == 3  # nine callers shared three connections, the others waited for one
    assert again <= set(pids)  # and the connections were kept for the next statements


async def test_a_connection_the_server_closed_is_replaced_when_taken(database_url: str) -> None:
    async with statement_pool(database_url, max_size=1) as pool:
        first = await pool.fetchval(PID)
        admin = await asyncpg.connect(plain(database_url))
        try:
            assert await admin.fetchval("select pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await until_gone(database_url, first)
        await asyncio.sleep(0.05)  # the client side reads the server's goodbye

        assert await pool.fetchval("select 41 + 1") == 42
        assert await pool.fetchval(PID) != first


async def test_a_statement_cut_short_gives_its_place_back_and_its_connection_is_not_reused(database_url: str) -> None:
    async with statement_pool(database_url, max_size=1) as pool:
        first = await pool.fetchval(PID)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.fetchval("select pg_sleep(30)")

        async with asyncio.timeout(5):  # one place only: the cancelled statement gave it back
            second = await pool.fetchval(PID)

    assert second != first  # a connection whose statement may still be running is never handed out again


async def test_a_failed_statement_does_not_leave_its_connection_to_the_next_caller(database_url: str) -> None:
    async with statement_pool(database_url, max_size=1) as pool:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await pool.fetchval("select 1 / 0")
        assert await pool.fetchval("select 1") == 1

        async with pool.acquire() as connection:
            left_open = await connection.fetchval(PID)
            await connection.execute("begin")  # a caller that forgot its transaction
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval(PID) != left_open


async def test_closing_closes_every_connection_and_refuses_new_statements(database_url: str) -> None:
    pool = StatementPool(database_url, max_size=2)
    pids = set(await asyncio.gather(*(pool.fetchval("select pg_backend_pid() from pg_sleep(0.05)") for _ in range(2))))
    await pool.close()

    for pid in pids:
        await until_gone(database_url, pid)
    with pytest.raises(asyncpg.InterfaceError, match="statement pool is closed"):
        await pool.fetchval("select 1")


async def test_connections_idle_for_idle_seconds_are_closed_and_a_steady_caller_keeps_one(database_url: str) -> None:
    before = await backends(database_url)
    pool = StatementPool(database_url, max_size=3, idle_seconds=0.5)

    async def opened_by_pool() -> set[int]:
        return await backends(database_url) - before

    try:
        sleepers = (pool.fetchval("select pg_backend_pid() from pg_sleep(0.05)") for _ in range(3))
        burst = set(await asyncio.gather(*sleepers))
        assert len(burst) == 3
        steady = set()
        for _ in range(30):  # a statement every 50 ms for 1.5 s: always the most recently used connection
            steady.add(await pool.fetchval(PID))
            await asyncio.sleep(0.05)
        assert len(steady) == 1
        assert steady <= burst

        async def only_steady_left() -> bool:
            return await opened_by_pool() == steady  # the two others the burst opened were closed

        async def none_left() -> bool:
            return not await opened_by_pool()

        await wait_until(only_steady_left, 10, "the burst's idle connections to close")
        await wait_until(none_left, 10, "the last idle connection to close")
        assert await pool.fetchval("select 41 + 1") == 42  # and the next statement opens a new one
        assert await opened_by_pool()
    finally:
        await pool.close()
