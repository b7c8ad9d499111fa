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
  open) is never handed out again: it is terminated, and the next caller opens a new one;
- a connection idle for `idle_seconds` (5 minutes, asyncpg's Pool's default) is closed, so a burst does not
  hold `max_size` backends of every process for good. The most recently used connection is handed out first,
  so under a steady load the ones a burst opened go idle and are closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from asyncpg import Connection, Record

T = TypeVar("T")


class StatementPool:
    """Up to `max_size` asyncpg connections to `database_url` (SQLAlchemy's form is accepted), one caller each."""

    def __init__(self, database_url: str, *, max_size: int, idle_seconds: float = 300.0) -> None:
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._in_use = asyncio.Semaphore(max_size)
        self._idle: list[tuple[Connection, float]] = []  # (connection, idle since), the most recent last
        self._idle_seconds = idle_seconds
        self._reaper: asyncio.TimerHandle | None = None
        self._closing_idle: set[asyncio.Task[None]] = set()
        self._closing = False

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        return await self._run(lambda connection: connection.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run(lambda connection: connection.fetchval(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        return await self._run(lambda connection: connection.fetch(query, *args))

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
        if self._reaper is not None:
            self._reaper.cancel()
        idle, self._idle = self._idle, []
        closing = [connection.close(timeout=5) for connection, _ in idle]
        await asyncio.gather(*closing, *self._closing_idle, return_exceptions=True)

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
                connection, _ = self._idle.pop()
                if not connection.is_closed():
                    return connection
            return await asyncpg.connect(self._dsn)
        except BaseException:
            self._in_use.release()
            raise

    def _give_back(self, connection: Connection, *, clean: bool) -> None:
        self._in_use.release()
        if clean and not self._closing and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append((connection, time.monotonic()))
            if self._reaper is None:
                self._reaper = asyncio.get_running_loop().call_later(self._idle_seconds, self._close_idle)
        else:
            connection.terminate()

    def _close_idle(self) -> None:
        """Close the connections idle for `idle_seconds` (the oldest first in the list); look again when the
        next one will be."""
        self._reaper = None
        expired = time.monotonic() - self._idle_seconds
        while self._idle and self._idle[0][1] <= expired:
            task = asyncio.ensure_future(_close_quietly(self._idle.pop(0)[0]))
            self._closing_idle.add(task)
            task.add_done_callback(self._closing_idle.discard)
        if self._idle:
            delay = self._idle[0][1] - expired
            self._reaper = asyncio.get_running_loop().call_later(delay, self._close_idle)


async def _close_quietly(connection: Connection) -> None:
    """Say goodbye to the server; a connection that cannot is dropped (nobody awaits this close)."""
    try:
        await connection.close(timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        connection.terminate()


@asynccontextmanager
async def statement_pool(database_url: str, *, max_size: int = 10) -> AsyncIterator[StatementPool]:
    """A `StatementPool`, closed on exit."""
    pool = StatementPool(database_url, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()
