"""Benchmark: mailboxes one `tokenwarden worker` process refreshes per second against a local token endpoint.

Run: `.venv/bin/python -m tests.benchmarks.worker_throughput [--count 3000] [--max-jobs 10]`. It starts
its own embedded PostgreSQL and Redis, serves the sandbox Google token endpoint on 127.0.0.1 in this
process, connects `--count` mailboxes all due now, starts one worker process and waits until every
mailbox is refreshed. Printed: the worker's rate between its first and last cycle (start-up excluded)
and the wall time. The sandbox shares the machine's cores with the worker, PostgreSQL and Redis, as
it would on a one-box deployment. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet

from devkit.embedded import start_embedded_postgres, start_embedded_redis
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import load_settings
from statemachine.store.migrations import migrate
from tests.jobs.support import add_mailboxes, scalar, serve_sandbox, start_worker, tokens

CLIENT = {"GOOGLE_CLIENT_ID": "tw-test-client.apps.test", "GOOGLE_CLIENT_SECRET": "tw-test-client-secret-DO-NOT-LEAK"}


async def prepare(env: dict[str, str], refresh_tokens: list[str]) -> None:
    assert env["DATABASE_URL"]
    await migrate(env["DATABASE_URL"])
    async with open_runtime(load_settings(env)) as rt:
        for start in range(0, len(refresh_tokens), 1000):
            await add_mailboxes(rt, refresh_tokens[start : start + 1000])


def cycle_times(log: Path) -> list[datetime]:
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [datetime.fromisoformat(line["ts"]) for line in lines if line.get("message") == "refresh cycle"]


async def refresh_all(env: dict[str, str], count: int, log: Path) -> float:
    """Start one worker, wait until every mailbox is refreshed; return the wall time from its start."""
    async with open_runtime(load_settings(env)) as rt:
        worker = start_worker(env, log)
        started = time.monotonic()
        try:
            done = "select count(*) from mailboxes where last_refreshed_at is not null"
            while await scalar(rt, done) < count:
                await asyncio.sleep(0.5)
                assert worker.poll() is None, f"the worker exited; see {log}"
            return time.monotonic() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)


def run(count: int, max_jobs: int) -> None:
    refresh_tokens = tokens(count, "bench")
    with start_embedded_postgres() as db, start_embedded_redis() as redis, serve_sandbox(refresh_tokens) as sandbox:
        env = {**CLIENT, "DATABASE_URL": db, "REDIS_URL": redis, "GOOGLE_TOKEN_URL": sandbox.token_url,
               "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(), "TOKENWARDEN_METRICS_PORT": "0",
               "TOKENWARDEN_SCAN_INTERVAL_SECONDS": "5", "TOKENWARDEN_SCAN_BATCH_SIZE": "1000",
               "TOKENWARDEN_WORKER_MAX_JOBS": str(max_jobs), "TOKENWARDEN_LOG_LEVEL": "INFO"}  # fmt: skip
        asyncio.run(prepare(env, refresh_tokens))
        log = Path(tempfile.mkdtemp(prefix="twbench")) / "worker.log"
        wall = asyncio.run(refresh_all(env, count, log))
        times = cycle_times(log)
        rate = (len(times) - 1) / (times[-1] - times[0]).total_seconds()
        requests = sum(sandbox.requests_by_token().values())
    print(f"mailboxes: {count}, worker max_jobs: {max_jobs}, token requests: {requests}")
    print(f"one worker: {rate:,.0f} mailboxes/s between its first and last cycle; {wall:.1f} s wall from its start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--max-jobs", type=int, default=10)
    args = parser.parse_args()
    run(args.count, args.max_jobs)


if __name__ == "__main__":
    main()
