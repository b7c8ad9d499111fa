"""Benchmark: client CPU of a cycle's lease, the ORM session's transaction (before) vs one autocommit statement (ours).

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
from datetime import UTC, datetime
from typing import Any, cast

from cryptography.fernet import Fernet

from devkit.embedded import start_embedded_postgres
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store import repository
from statemachine.store.db import autocommit
from statemachine.store.migrations import migrate
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


async def measure(rt: Runtime, count: int) -> list[Figure]:
    await scale.generate(rt, MAILBOXES)

    async def in_session(mailbox_id: int) -> None:
        """How run_cycle leased before: the same statement through the ORM session's execute, in a transaction."""
        async with rt.sessionmaker() as session, session.begin():
            as_before = cast(Any, session)  # the session's execute/scalar take the statements take_lease sends
            await repository.take_lease(as_before, mailbox_id, uuid.uuid4(), datetime.now(UTC), 0.001)

    async def alone(mailbox_id: int) -> None:
        async with autocommit(rt.sessionmaker) as conn:
            await repository.take_lease(conn, mailbox_id, uuid.uuid4(), datetime.now(UTC), 0.001)

    figures = []
    for _ in range(3):
        before = await cpu_per_lease(count, in_session)
        ours = await cpu_per_lease(count, alone)
        figures.append(Figure("lease, one autocommit statement", ours * 1000, "ms", "in a session's transaction",
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
