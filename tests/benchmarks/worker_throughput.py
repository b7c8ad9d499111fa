"""Benchmark: the whole refresh pipeline in `tokenwarden worker` processes against a local token endpoint.

Run: `.venv/bin/python -m tests.benchmarks.worker_throughput [--count 3000] [--max-jobs 40]` (the default slots).
It starts its own embedded PostgreSQL and Redis, serves the sandbox Google token endpoint on 127.0.0.1 in a
thread of this process, connects `--count` mailboxes all due now, then, three times with one worker
process and once with two, waits until every mailbox is refreshed. Printed: the workers' CPU per refresh
(from /proc, between the first refresh seen and the last), the whole box's busy CPU per refresh over
the same span (workers, PostgreSQL, Redis and the endpoint), refreshes per second, and the largest
worker RSS seen, each beside its baseline measured in the same run: the issue's minimal prototype
refreshing the same mailboxes (tests/benchmarks/prototype.py; one worker and the prototype run three
times, alternated, and the run of median CPU of each is shown), a bare aiohttp refresh loop in a process
of its own, as each worker is (the median of one run before the workers and two after, as the box's speed
drifts), a bare SQL lock+update, arq no-op jobs (tests/benchmarks/floors.py).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
from cryptography.fernet import Fernet
from sqlalchemy import text

from devkit.embedded import start_embedded_postgres, start_embedded_redis
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import Settings, load_settings
from statemachine.store.migrations import migrate
from tests.benchmarks import floors, prototype, scale
from tests.benchmarks.figures import Figure, print_figures
from tests.jobs.support import add_mailboxes, scalar, serve_sandbox, start_worker, tokens

CLIENT = {"GOOGLE_CLIENT_ID": "tw-test-client.apps.test", "GOOGLE_CLIENT_SECRET": "tw-test-client-secret-DO-NOT-LEAK"}
COMMAND = "python -m tests.benchmarks.worker_throughput"
DONE = "select count(*) from mailboxes where last_refreshed_at is not null"
RESET = "update mailboxes set last_refreshed_at = null, next_refresh_at = now()"
# Mailboxes connected through consent know their account; one added by the CLI or an import learns it on its first
# refresh only (from the answer's id_token). The benchmark measures the steady state, so its mailboxes know theirs.
KNOWN_ACCOUNTS = "update mailboxes set provider_subject = 'bench-account-' || id"


@dataclass(frozen=True)
class Run:
    cpu_per_refresh: float  # seconds of the workers' CPU
    box_cpu_per_refresh: float  # seconds of the whole machine's CPU: workers, PostgreSQL, Redis, the endpoint
    postgres_cpu_per_refresh: float  # of which PostgreSQL's (the server and its backends)
    endpoint_cpu_per_refresh: float  # of which this process's: the token endpoint's thread, and the polling
    per_second: float
    peak_rss: int  # bytes, the largest of one worker


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def postgres_seconds(server: psutil.Process) -> float:
    return sum(scale.postgres_cpu(server).values())


async def refresh_all(rt: Runtime, env: dict[str, str], count: int, workers: int, log: Path) -> Run:
    """Start `workers` workers, wait until every mailbox is refreshed, sampling CPU and RSS as they go."""
    procs = [start_worker(env, log) for _ in range(workers)]
    watched = [psutil.Process(p.pid) for p in procs]
    postgres, endpoint = scale.postmaster(env["DATABASE_URL"]), psutil.Process()
    first: tuple[float, float, float, float, float, int] | None = None
    peak = 0
    try:
        while (done := await scalar(rt, DONE)) < count:
            peak = max([peak, *(p.memory_info().rss for p in watched)])
            if first is None and done > 0:
                pg, ours = postgres_seconds(postgres), cpu_seconds([endpoint])
                first = (time.monotonic(), cpu_seconds(watched), floors.box_cpu_seconds(), pg, ours, done)
            assert all(p.poll() is None for p in procs), f"a worker exited; see {log}"
            await asyncio.sleep(0.05)
        assert first is not None, "every mailbox was refreshed between two samples: raise --count"
        started, cpu, box, pg, ours, done_then = first
        refreshed = count - done_then
        return Run((cpu_seconds(watched) - cpu) / refreshed, (floors.box_cpu_seconds() - box) / refreshed,
                   (postgres_seconds(postgres) - pg) / refreshed, (cpu_seconds([endpoint]) - ours) / refreshed,
                   refreshed / (time.monotonic() - started), peak)  # fmt: skip
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.to_thread(proc.wait, 30)


ROUNDS = 3

T = TypeVar("T")


def _median_of(runs: list[T], key: Callable[[T], float]) -> T:
    """The run of median `key` (its other figures with it)."""
    return sorted(runs, key=key)[len(runs) // 2]


async def reset(rt: Runtime) -> None:
    """Every mailbox due again and not yet refreshed, for the next run."""
    async with rt.sessionmaker() as session, session.begin():
        await session.execute(text(RESET))


async def measure(env: dict[str, str], count: int, refresh_tokens: list[str], token_url: str) -> list[Figure]:
    assert env["DATABASE_URL"]
    await migrate(env["DATABASE_URL"])
    log = Path(tempfile.mkdtemp(prefix="twbench")) / "worker.log"
    http_rounds = [await floors.aiohttp_loop_apart(token_url, refresh_tokens, CLIENT)]
    async with open_runtime(load_settings(env)) as rt:
        for start in range(0, count, 1000):
            await add_mailboxes(rt, refresh_tokens[start : start + 1000])
        async with rt.sessionmaker() as session, session.begin():
            await session.execute(text(KNOWN_ACCOUNTS))
        ones: list[Run] = []
        protos: list[prototype.PrototypeRun] = []
        for _ in range(ROUNDS):  # one worker and the prototype alternated: a busy moment hits both alike
            ones.append(await refresh_all(rt, env, count, 1, log))
            await reset(rt)
            protos.append(await prototype.run_apart(env["DATABASE_URL"], token_url, CLIENT,
                                                    env["TOKENWARDEN_ENCRYPTION_KEYS"]))  # fmt: skip
            await reset(rt)
        two = await refresh_all(rt, env, count, 2, log)
    one = _median_of(ones, lambda run: run.cpu_per_refresh)
    proto = _median_of(protos, lambda run: run.cpu_per_refresh)
    http_rounds += [await floors.aiohttp_loop_apart(token_url, refresh_tokens, CLIENT) for _ in range(2)]
    http = statistics.median(http_rounds)  # before and after the workers: the box's speed drifts
    sql = await floors.sql_lock_update(env["DATABASE_URL"], count)
    arq = await floors.arq_noop_jobs(env["REDIS_URL"], count)
    mb = 1024 * 1024
    rss = f"worker RSS, max {env['TOKENWARDEN_WORKER_MAX_JOBS']} jobs in flight"
    return [
        Figure("worker CPU per refresh, 1 worker", one.cpu_per_refresh * 1000, "ms", "bare aiohttp loop",
               http * 1000, COMMAND, "<= 1.5 ms"),
        Figure("worker CPU per refresh, 1 worker", one.cpu_per_refresh * 1000, "ms", "the issue's prototype",
               proto.cpu_per_refresh * 1000, COMMAND, "< prototype"),
        Figure("worker CPU per refresh, 1 worker", one.cpu_per_refresh * 1000, "ms", "bare SQL lock+update",
               sql * 1000, COMMAND),
        Figure("worker CPU per refresh, 1 worker", one.cpu_per_refresh * 1000, "ms", "arq no-op job",
               arq * 1000, COMMAND),
        Figure("refreshes/s, 2 workers", two.per_second, "/s", "1 worker", one.per_second, COMMAND, ">= 600/s"),
        Figure("refreshes/s, 1 worker", one.per_second, "/s", "the issue's prototype", proto.per_second, COMMAND),
        Figure("workers' CPU per refresh, 2 workers", two.cpu_per_refresh * 1000, "ms", "bare aiohttp loop",
               http * 1000, COMMAND),
        Figure("whole box's CPU per refresh, 2 workers", two.box_cpu_per_refresh * 1000, "ms", "the issue's prototype",
               proto.box_cpu_per_refresh * 1000, COMMAND, "<= prototype"),
        Figure("whole box's CPU per refresh, 1 worker", one.box_cpu_per_refresh * 1000, "ms", "the issue's prototype",
               proto.box_cpu_per_refresh * 1000, COMMAND, "<= prototype"),
        Figure("  of which PostgreSQL's, 2 workers", two.postgres_cpu_per_refresh * 1000, "ms", "1 worker",
               one.postgres_cpu_per_refresh * 1000, COMMAND),
        Figure("  of which the token endpoint's, 2 workers", two.endpoint_cpu_per_refresh * 1000, "ms", "1 worker",
               one.endpoint_cpu_per_refresh * 1000, COMMAND),
        Figure(rss, one.peak_rss / mb, "MB", "RSS of 2 workers' largest",
               two.peak_rss / mb, COMMAND, "<= 150 MB"),
    ]  # fmt: skip


def figures(count: int = 3000, max_jobs: int = Settings.worker_max_jobs) -> list[Figure]:
    refresh_tokens = tokens(count, "bench")
    with start_embedded_postgres() as db, start_embedded_redis() as redis, serve_sandbox(refresh_tokens) as sandbox:
        env = {**CLIENT, "DATABASE_URL": db, "REDIS_URL": redis, "GOOGLE_TOKEN_URL": sandbox.token_url,
               "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(), "TOKENWARDEN_METRICS_PORT": "0",
               "TOKENWARDEN_SCAN_INTERVAL_SECONDS": "5", "TOKENWARDEN_SCAN_BATCH_SIZE": "1000",
               "TOKENWARDEN_WORKER_MAX_JOBS": str(max_jobs), "TOKENWARDEN_LOG_LEVEL": "INFO"}  # fmt: skip
        return asyncio.run(measure(env, count, refresh_tokens, sandbox.token_url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--max-jobs", type=int, default=Settings.worker_max_jobs)
    args = parser.parse_args()
    print_figures(figures(args.count, args.max_jobs))


if __name__ == "__main__":
    main()
