"""Benchmark: `tokenwarden mailbox import` throughput, batched (ours) vs one transaction per mailbox (baseline).

Run: `DATABASE_URL=postgresql://postgres@127.0.0.1/test .venv/bin/python -m tests.benchmarks.bulk_import`
against a migrated database (it creates users and mailboxes with an `@bench.test` suffix, then
deletes them). Prints mailboxes per second for both and the ratio. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime

from cryptography.fernet import Fernet
from sqlalchemy import text

from statemachine.services.importer import import_mailboxes
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import load_settings


def lines(count: int, tag: str) -> list[str]:
    return [
        json.dumps({"user": f"u{i % 100}-{tag}@bench.test", "provider": "google",
                    "address": f"m{i}-{tag}@bench.test", "refresh_token": f"1//bench-{uuid.uuid4().hex}"})
        for i in range(count)
    ]  # fmt: skip


async def timed_import(rt, rows: list[str], batch: bool) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    if batch:
        report = await import_mailboxes(rt.sessionmaker, rows, rt.cipher, rt.settings.policy, lambda: datetime.now(UTC))
        assert not report.problems, report.problems[:3]
    else:
        for row in rows:  # what a loop over `tokenwarden mailbox add` amounts to, minus process start-up
            await import_mailboxes(rt.sessionmaker, [row], rt.cipher, rt.settings.policy, lambda: datetime.now(UTC))
    return len(rows) / (time.perf_counter() - started)


async def run(count: int) -> None:
    env = {"TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(), **os.environ}
    async with open_runtime(load_settings(env)) as rt:
        try:
            baseline = await timed_import(rt, lines(count // 10, "one"), batch=False)
            ours = await timed_import(rt, lines(count, "batch"), batch=True)
        finally:
            async with rt.sessionmaker() as session, session.begin():
                await session.execute(text("delete from mailboxes where address like '%@bench.test'"))
                await session.execute(text("delete from users where email like '%@bench.test'"))
    print(f"{'import':42} {'mailboxes/s':>12} {'vs baseline':>12}")
    print(f"{'one transaction per mailbox (baseline)':42} {baseline:>12,.0f} {1:>11.2f}x")
    print(f"{'batches of 1000 (tokenwarden mailbox import)':42} {ours:>12,.0f} {ours / baseline:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    asyncio.run(run(parser.parse_args().count))


if __name__ == "__main__":
    main()
