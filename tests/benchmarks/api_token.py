"""Benchmark: POST /v1/mailboxes/{id}/access-token for a fresh token, beside a bare Starlette "hello" route.

Run: `make bench` (or `.venv/bin/python -m tests.benchmarks.api_token [--seconds 10]`). It starts its own
embedded PostgreSQL and Redis, connects one mailbox whose stored token is valid for an hour, creates an
API key, serves `tokenwarden serve` (one uvicorn process, as an operator runs it) and a bare Starlette app
on the same uvicorn settings, and drives both: the most requests/s Debian's `wrk` (a C load generator)
gets with 32 connections, then the latency of an open-loop client at 200 requests/s (a raw asyncio client
over 10 keep-alive connections: each request is due at a fixed time and its latency counts from then, so
a stall shows in p99 instead of slowing the client down as wrk's closed loop would). Both servers share
this machine's cores with PostgreSQL, Redis and the load generators. Not part of the test suite.

Where the time went (py-spy on the server under wrk): the common case was one ORM transaction of six
round trips (pre-ping, BEGIN, key, row, audit insert, COMMIT; the asyncpg dialect's pre-ping is itself
BEGIN + query + ROLLBACK) and about 3 ms of Python per request in SQLAlchemy's session, asyncpg and the
middleware. Now it is one prepared statement on its own asyncpg pool (web/v1/fast_token.py); what is
left is mostly the socket writes to the client and to PostgreSQL, then Starlette's routing and middleware,
Fernet (about 15 us) and the JSON access log line. uvicorn runs on h11 and asyncio's loop: installing
uvloop and httptools (which it would pick) measured ~2,000 -> ~2,700-4,300 req/s here, but is left out
until the simulator's timing test is known to hold with them. The p99 follows the load of this shared box: the bare
route's p99 swings with it too, which is why both are printed.
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


def lua(path: Path, key: str | None) -> Path:
    lines = ['wrk.method = "POST"', "wrk.body = '{\"min_valid_seconds\": 60}'",
             'wrk.headers["Content-Type"] = "application/json"']  # fmt: skip
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, script: Path, seconds: int) -> float:
    """Requests/s as wrk reports it at MAX_CONNECTIONS; a run with any non-2xx answer is refused."""
    command = ["wrk", "-t2", f"-c{MAX_CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


async def _post(pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes) -> None:
    """One keep-alive POST on a pooled connection; a raw client, so it takes little of the cores it shares."""
    reader, writer = await pool.get()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"paced client got {head[:40]!r}")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    pool.put_nowait((reader, writer))


async def paced(url: str, key: str | None, seconds: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of an open-loop client: request i is due at i / PACED_RATE s whatever the
    answers before it did, and its latency counts from that due time (wrk's closed loop would hide a stall)."""
    parts = httpx.URL(url)
    body = b'{"min_valid_seconds": 60}'
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    request = (f"POST {parts.raw_path.decode()} HTTP/1.1\r\nhost: {parts.host}\r\n{auth}content-type: "
               f"application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(PACED_CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection(parts.host, parts.port))
    latencies: list[float] = []

    async def one(due: float) -> None:
        await asyncio.sleep(due - time.perf_counter())
        await _post(pool, request)
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter() + 0.1
    await asyncio.gather(*(one(start + i / PACED_RATE) for i in range(PACED_RATE * seconds)))
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    latencies.sort()
    return len(latencies) / elapsed, 1000 * latencies[len(latencies) // 2], 1000 * latencies[len(latencies) * 99 // 100]


def run(seconds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (make bench does it)")
    with (
        tempfile.TemporaryDirectory(prefix="twbench") as tmpdir,
        start_embedded_postgres() as db,
        start_embedded_redis() as redis,
    ):
        tmp = Path(tmpdir)
        env = {
            "DATABASE_URL": db,
            "REDIS_URL": redis,
            "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "TOKENWARDEN_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijkl",
            "TOKENWARDEN_LOG_LEVEL": "INFO",  # as deployed: one access log line per request
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
                most = wrk(url, lua(tmp / f"{name[:5]}.lua", auth), seconds)
                results[name] = (most, *asyncio.run(paced(url, auth, seconds)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} cores; one `tokenwarden serve` process (uvicorn, one worker)")
    print(f"most: wrk -t2 -c{MAX_CONNECTIONS} -d{seconds}s -s <POST script> URL")
    print(f"paced: open-loop raw asyncio client, {PACED_CONNECTIONS} keep-alive connections, {PACED_RATE} requests/s "
          f"for {seconds} s, latency counted from each request's due time")  # fmt: skip
    print(f"{'route':24} {'most req/s':>12} {'paced req/s':>12} {'p50 paced':>10} {'p99 paced':>10}")
    for name, (most, paced_rate, p50, p99) in results.items():
        print(f"{name:24} {most:>12,.0f} {paced_rate:>12,.0f} {p50:>8.1f}ms {p99:>8.1f}ms")
    ratio = results["access-token"][0] / results["bare Starlette hello"][0]
    print(f"access-token / bare hello at most: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    run(parser.parse_args().seconds)


if __name__ == "__main__":
    main()
