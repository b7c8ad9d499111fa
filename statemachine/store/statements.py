"""Plain asyncpg connections for the hottest statements: a cycle's lease and outcome, the access-token route.

Why not SQLAlchemy's pool: its pre-ping costs three round trips in the asyncpg dialect (BEGIN, a query,
ROLLBACK), its pool closes overflow connections (32 callers churned PostgreSQL backends), and compiling and
running one Core statement costs several times the CPU of a prepared asyncpg statement (README, Measurements).

Why not asyncpg's own Pool either: taking and giving back one of its connections cost about 20 µs of CPU per
statement (a shielded task for every release, timeout scopes, a proxy object), where the statement itself
cost 26 µs (46 vs 26 µs for a one-row statement, 10 in flight on uvloop; the note of issue 12). A cycle runs
two or three such statements. The statements sent here need none of what that buys: each is atomic on its
own (no BEGIN, no COMMIT, nothing to reset), so `StatementPool` keeps only what they do need:
- connections are opened when first needed (a CLI command may never use one), at most `max_size` at once,
  and a caller waits for one when all are in use;
- a connection the server closed (a restart) is replaced when taken;
- a connection whose use did not end cleanly (an error, a cancellation mid-statement, a transaction left
  open) is never handed out again: it is terminated, and the next caller opens a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from asyncpg import Connection, Record

T = TypeVar("T")


class StatementPool:
    """Up to `max_size` asyncpg connections to `database_url` (SQLAlchemy's form is accepted), one caller each."""

    def __init__(self, database_url: str, *, max_size: int) -> None:
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._in_use = asyncio.Semaphore(max_size)
        self._idle: list[Connection] = []
        self._closing = False

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        return await self._run(lambda connection: connection.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run(lambda connection: connection.fetchval(query, *args))

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        """A connection for several statements; the same rules as one statement's."""
        connection = await self._take()
        clean = False
        try:
            yield connection
            clean = True
        finally:
            self._give_back(connection, clean=clean)

    async def close(self) -> None:
        """Close the idle connections now, and each one in use when it is given back."""
        self._closing = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.close(timeout=5) for connection in idle), return_exceptions=True)

    async def _run(self, statement: Callable[[Connection], Awaitable[T]]) -> T:
        connection = await self._take()
        try:
            result = await statement(connection)
        except BaseException:
            self._give_back(connection, clean=False)
            raise
        self._give_back(connection, clean=True)
        return result

    async def _take(self) -> Connection:
        if self._closing:
            raise asyncpg.InterfaceError("the statement pool is closed")
        await self._in_use.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
            return await asyncpg.connect(self._dsn)
        except BaseException:
            self._in_use.release()
            raise

    def _give_back(self, connection: Connection, *, clean: bool) -> None:
        self._in_use.release()
        if clean and not self._closing and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append(connection)
        else:
            connection.terminate()


@asynccontextmanager
async def statement_pool(database_url: str, *, max_size: int = 10) -> AsyncIterator[StatementPool]:
    """A `StatementPool`, closed on exit."""
    pool = StatementPool(database_url, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()
