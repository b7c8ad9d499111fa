"""Plain asyncpg connections for the hottest statements: a cycle's lease and outcome, the access-token route.

Why not SQLAlchemy's pool: its pre-ping costs three round trips in the asyncpg dialect (BEGIN, a query,
ROLLBACK), its pool closes overflow connections (32 callers churned PostgreSQL backends), and compiling and
running one Core statement costs several times the CPU of a prepared asyncpg statement (README, Measurements).
Each statement sent here is atomic on its own (no BEGIN, no COMMIT), so nothing is reset on release (asyncpg
still rolls back a transaction left open). A connection the server closed (a restart) is replaced when
acquired, as the pre-ping would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncpg import Connection, Pool, create_pool


@asynccontextmanager
async def statement_pool(database_url: str, *, max_size: int = 10) -> AsyncIterator[Pool]:
    """Up to `max_size` connections, opened when first needed (a CLI command may never use one)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pool = await create_pool(dsn, min_size=0, max_size=max_size, reset=_leave_as_is)
    try:
        yield pool
    finally:
        await pool.close()


async def _leave_as_is(connection: Connection) -> None:
    return None
