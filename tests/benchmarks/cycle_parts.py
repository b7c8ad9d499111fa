"""Benchmark: what one refresh cycle's CPU is made of, in one process, part by part.

Run: `.venv/bin/python -m tests.benchmarks.cycle_parts [--count 3000]`. It starts its own embedded
PostgreSQL (deleted afterwards), serves the sandbox Google token endpoint in a thread, connects
`--count` mailboxes and runs, 10 at once on uvloop, three times over: the whole cycle of `tokenwarden
refresh` (lease, token request, outcome); the same cycle with a provider that answers at once (its
database, crypto and machine work); the token request alone through our adapter; and a bare httpx POST
on the same client. Each is printed beside its floor, measured in the same run: a bare aiohttp loop and
a bare SQL lock+update (tests/benchmarks/floors.py). Last, the garbage collector's share of the whole
cycle's CPU at the worker's threshold (jobs/commands.py, which every part but the floors runs at)
beside Python's default, alternated. CPU is this thread's only, so the endpoint's thread is not counted.
The worker benchmark measures the whole pipeline around the cycle (scan, jobs, logs); this one says
where inside the cycle to look. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from cryptography.fernet import Fernet

from devkit.embedded import start_embedded_postgres
from jobs.commands import WORKER_GC_THRESHOLD
from statemachine.providers.oauth import TokenGrant
from statemachine.services.cycle import run_cycle
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings
from statemachine.store.migrations import migrate
from tests.benchmarks import floors
from tests.benchmarks.figures import Figure, print_figures
from tests.benchmarks.worker_throughput import CLIENT
from tests.jobs.support import add_mailboxes, serve_sandbox, tokens

COMMAND = "python -m tests.benchmarks.cycle_parts"
ROUNDS = 3  # each part once per round, the parts alternated: a busy moment hits them alike
NO_HTTP = "cycle, provider answering at once"
GC_SHARE = "GC's share of the whole cycle's CPU"
PYTHON_GC_THRESHOLD = 700


class InstantProvider:
    """A provider that answers every refresh at once, as Google would: the cycle minus its HTTP call."""

    async def refresh(self, refresh_token: str, *, account_known: bool = False) -> TokenGrant:
        await asyncio.sleep(0)
        return TokenGrant(access_token="ya29.bench-" + refresh_token[-12:], expires_in=3599)


async def parts(rt: Runtime, ids: list[int], refresh_tokens: list[str], token_url: str) -> dict[str, float]:
    """Milliseconds of CPU per operation, the median of ROUNDS rounds of each part, the parts alternated."""
    deps = rt.cycle_deps()
    instant = dataclasses.replace(deps, providers={"google": InstantProvider()})
    google = rt.providers["google"]
    form = {"grant_type": "refresh_token", "client_id": CLIENT["GOOGLE_CLIENT_ID"],
            "client_secret": CLIENT["GOOGLE_CLIENT_SECRET"]}  # fmt: skip

    async def post(index: int) -> None:
        response = await rt.http.post(token_url, data={**form, "refresh_token": refresh_tokens[index]})
        response.json()

    operations = {
        "whole cycle": lambda i: run_cycle(deps, ids[i], actor="bench"),
        NO_HTTP: lambda i: run_cycle(instant, ids[i], actor="bench"),
        "adapter's token request": lambda i: google.refresh(refresh_tokens[i]),
        "httpx POST on the same client": post,
    }
    await floors.per_operation(200, operations["whole cycle"])  # warm-up: connections, prepared statements
    seconds: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(ROUNDS):
        for name, operation in operations.items():
            seconds[name].append(await floors.per_operation(len(ids), operation))
    return {name: statistics.median(values) * 1000 for name, values in seconds.items()}


async def gc_shares(count: int, cycle: Callable[[int], Awaitable[object]]) -> dict[int, float]:
    """Per young-generation threshold (Python's, the worker's), the median percentage of the cycles' CPU spent
    collecting garbage, timed by `gc.callbacks`; the thresholds alternated, ROUNDS times."""
    collecting = {"since": 0.0, "seconds": 0.0}

    def clock(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting["since"] = time.thread_time()
        else:
            collecting["seconds"] += time.thread_time() - collecting["since"]

    shares: dict[int, list[float]] = {PYTHON_GC_THRESHOLD: [], WORKER_GC_THRESHOLD: []}
    before = gc.get_threshold()
    gc.callbacks.append(clock)
    try:
        for _ in range(ROUNDS):
            for threshold, values in shares.items():
                gc.set_threshold(threshold, *before[1:])
                collecting["seconds"], started = 0.0, time.thread_time()
                await floors.per_operation(count, cycle)
                values.append(100 * collecting["seconds"] / (time.thread_time() - started))
    finally:
        gc.callbacks.remove(clock)
        gc.set_threshold(*before)
    return {threshold: statistics.median(values) for threshold, values in shares.items()}


async def measure(env: dict[str, str], refresh_tokens: list[str], token_url: str) -> list[Figure]:
    await migrate(env["DATABASE_URL"])
    python_thresholds = gc.get_threshold()
    async with open_runtime(load_settings(env)) as rt:
        ids: list[int] = []
        for start in range(0, len(refresh_tokens), 1000):
            ids += await add_mailboxes(rt, refresh_tokens[start : start + 1000])
        gc.set_threshold(WORKER_GC_THRESHOLD, *python_thresholds[1:])
        ms = await parts(rt, ids, refresh_tokens, token_url)
        gc_percent = await gc_shares(len(ids), lambda i: run_cycle(rt.cycle_deps(), ids[i], actor="bench"))
    gc.set_threshold(*python_thresholds)  # the floors run bare, as in the worker benchmark
    http = await floors.aiohttp_loop(token_url, refresh_tokens, CLIENT) * 1000
    sql = await floors.sql_lock_update(env["DATABASE_URL"], len(refresh_tokens)) * 1000
    floor = {name: ("bare SQL lock+update", sql) if name == NO_HTTP else ("bare aiohttp loop", http) for name in ms}
    return [
        *(Figure(name, value, "ms", *floor[name], COMMAND) for name, value in ms.items()),
        Figure(GC_SHARE, gc_percent[WORKER_GC_THRESHOLD], "%", f"Python's default GC threshold ({PYTHON_GC_THRESHOLD})",
               gc_percent[PYTHON_GC_THRESHOLD], COMMAND),
    ]  # fmt: skip


def figures(count: int = 3000) -> list[Figure]:
    refresh_tokens = tokens(count, "parts")
    with start_embedded_postgres() as db, serve_sandbox(refresh_tokens) as sandbox:
        env = {**CLIENT, "DATABASE_URL": db, "GOOGLE_TOKEN_URL": sandbox.token_url,
               "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode()}  # fmt: skip
        return uvloop.run(measure(env, refresh_tokens, sandbox.token_url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    print_figures(figures(args.count))


if __name__ == "__main__":
    main()
