"""Benchmark: client CPU of a cycle's lease, a SQLAlchemy Core statement (before) vs a prepared asyncpg one (ours).

Run: `.venv/bin/python -m tests.benchmarks.lease [--leases 3000]`. It starts its own embedded
PostgreSQL (deleted afterwards), generates 10,000 mailboxes and takes leases on them, 10 at once,
alternating the two ways three times. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

from cryptography.fernet import Fernet
from sqlalchemy import Update, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from devkit.embedded import start_embedded_postgres
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store import cycle_rows
from statemachine.store.migrations import migrate
from statemachine.store.models import Mailbox
from tests.benchmarks import scale
from tests.benchmarks.figures import Figure, print_figures

MAILBOXES = 10_000
IN_FLIGHT = 10


async def cpu_per_lease(count: int, lease: Callable[[int], Awaitable[None]]) -> float:
    indexes = iter(range(count))

    async def lane() -> None:
        for index in indexes:
            await lease(1 + index % MAILBOXES)

    started = time.process_time()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return (time.process_time() - started) / count


def core_lease(mailbox_id: int, now: datetime) -> Update:
    """How run_cycle leased before: the same UPDATE built with SQLAlchemy Core, on an autocommit connection."""
    free = or_(Mailbox.lease_until.is_(None), Mailbox.lease_until <= now)
    return (
        update(Mailbox)
        .where(Mailbox.id == mailbox_id, free, Mailbox.removed_at.is_(None))
        .values(lease_owner=uuid.uuid4(), lease_until=now + timedelta(milliseconds=1))
        .returning(Mailbox.revision, Mailbox.provider, Mailbox.refresh_token_ciphertext, Mailbox.grant_generation)
    )


async def measure(rt: Runtime, count: int) -> list[Figure]:
    await scale.generate(rt, MAILBOXES)
    engine = cast(AsyncEngine, rt.sessionmaker.kw["bind"])

    async def with_core(mailbox_id: int) -> None:
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            (await autocommit.execute(core_lease(mailbox_id, datetime.now(UTC)))).one_or_none()

    async def prepared(mailbox_id: int) -> None:
        now = datetime.now(UTC)
        await cycle_rows.take_lease(rt.statements, mailbox_id, uuid.uuid4(), now, now + timedelta(milliseconds=1))

    figures = []
    for _ in range(3):
        before = await cpu_per_lease(count, with_core)
        ours = await cpu_per_lease(count, prepared)
        figures.append(Figure("lease, one prepared asyncpg statement", ours * 1000, "ms", "SQLAlchemy Core, autocommit",
                              before * 1000, "python -m tests.benchmarks.lease"))  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=3000)
    count = parser.parse_args().leases
    with start_embedded_postgres() as db:
        env = {"DATABASE_URL": db, "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode()}

        async def run() -> list[Figure]:
            await migrate(db)
            async with open_runtime(load_settings(env)) as rt:
                return await measure(rt, count)

        print_figures(asyncio.run(run()))


if __name__ == "__main__":
    main()
