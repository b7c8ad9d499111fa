"""Benchmark: POST /v1/mailboxes/{id}/access-token for a fresh token, beside a bare Starlette "hello" route.

Run: `make bench` (or `.venv/bin/python -m tests.benchmarks.api_token [--seconds 10]`). It starts its own
embedded PostgreSQL and Redis, connects one mailbox whose stored token is valid for an hour, creates an
API key, serves `tokenwarden serve` (one uvicorn process, as an operator runs it) and a bare Starlette app
on the same uvicorn settings, and drives both with Debian's `wrk` (a C load generator): the most
requests/s it can get (32 connections), then the latency at a paced 200 requests/s. Both servers share
this machine's cores with PostgreSQL, Redis and wrk itself. Not part of the test suite.

Where the time goes (measured in-process): the common case is one transaction of 5 round trips (key
check, row read, audit insert) and about 3 ms of Python per request in SQLAlchemy, asyncpg and the
middleware, so one uvicorn process tops out near 300/s here. Reaching 1,000/s needs that CPU cut
(prepared raw asyncpg statements for the hot path) or more web processes; neither is done yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devkit.embedded import start_embedded_postgres, start_embedded_redis
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import load_settings
from statemachine.store.migrations import migrate
from tests.factories import add_mailbox
from tests.web.support import free_port
from tests.web.v1.support import store_access_token
from web.pages import WebContext
from web.v1.keys import create_key

PACED_RATE = 200
PACED_CONNECTIONS = 10
MAX_CONNECTIONS = 32


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


hello_app = Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"])])


async def prepare(env: dict[str, str]) -> tuple[str, int]:
    await migrate(env["DATABASE_URL"])
    async with open_runtime(load_settings(env)) as rt:
        mailbox_id = await add_mailbox(rt, "1//bench-refresh-token")
        await store_access_token(WebContext(rt, None, None), mailbox_id, "ya29.bench", 3600)  # type: ignore[arg-type]
        async with rt.sessionmaker() as session, session.begin():
            key = await create_key(session, f"bench-{datetime.now(UTC):%H%M%S}")
    return key, mailbox_id


@contextmanager
def serving(command: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(10)


def lua(path: Path, key: str | None, paced: bool) -> Path:
    lines = ['wrk.method = "POST"', "wrk.body = '{\"min_valid_seconds\": 60}'",
             'wrk.headers["Content-Type"] = "application/json"']  # fmt: skip
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    if paced:  # each connection waits so the whole run stays near PACED_RATE requests/s
        lines.append(f"function delay() return {1000 * PACED_CONNECTIONS // PACED_RATE} end")
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float]:
    """(requests/s, p99 in ms) as wrk reports them; a run with any non-2xx answer is refused."""
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rate, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run(seconds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (make bench does it)")
    tmp = Path(tempfile.mkdtemp(prefix="twbench"))
    with start_embedded_postgres() as db, start_embedded_redis() as redis:
        env = {
            "DATABASE_URL": db,
            "REDIS_URL": redis,
            "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "TOKENWARDEN_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijkl",
            "TOKENWARDEN_LOG_LEVEL": "WARNING",
        }
        key, mailbox_id = asyncio.run(prepare(env))
        tw_port, hello_port = free_port(), free_port()
        tw = f"http://127.0.0.1:{tw_port}"
        hello_url = f"http://127.0.0.1:{hello_port}/hello"
        serve_tw = [sys.executable, "-m", "statemachine.cli.main", "serve", "--port", str(tw_port)]
        serve_hello = [sys.executable, "-m", "uvicorn", "tests.benchmarks.api_token:hello_app", "--port",
                       str(hello_port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
        token_url = f"{tw}/v1/mailboxes/{mailbox_id}/access-token"
        results = {}
        with (
            serving(serve_tw, env, f"{tw}/healthz", tmp / "serve.log"),
            serving(serve_hello, env, hello_url, tmp / "hello.log"),
        ):
            for name, url, auth in (("access-token", token_url, key), ("bare Starlette hello", hello_url, None)):
                most, _ = wrk(url, lua(tmp / f"{name[:5]}.lua", auth, False), MAX_CONNECTIONS, seconds)
                paced_rate, p99 = wrk(url, lua(tmp / f"{name[:5]}-paced.lua", auth, True), PACED_CONNECTIONS, seconds)
                results[name] = (most, paced_rate, p99)
    print(f"wrk, {seconds} s per run; most: {MAX_CONNECTIONS} connections; paced: ~{PACED_RATE} requests/s")
    print(f"{'route':24} {'most req/s':>12} {'paced req/s':>12} {'p99 paced':>10}")
    for name, (most, paced_rate, p99) in results.items():
        print(f"{name:24} {most:>12,.0f} {paced_rate:>12,.0f} {p99:>8.1f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    run(parser.parse_args().seconds)


if __name__ == "__main__":
    main()
