"""Benchmark: client CPU per token refresh, httpx's default transport (baseline) vs ours, same process.

Run: `.venv/bin/python -m tests.benchmarks.http_client [--requests 1000]` (or `make bench`).
The sandbox token endpoint runs in a separate process, so only the client's CPU is measured
(time.process_time of this process). Prints one row per (client, concurrency) and the ratio to the
baseline at the same concurrency. Not part of the test suite: speed is shown, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from statemachine.providers import google
from statemachine.providers.oauth import OAuthProvider, RetryPolicy, make_http_client

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
SERVER = (
    "import uvicorn; from devkit.sandbox import create_sandbox_app;"
    f"uvicorn.run(create_sandbox_app(client_id={CLIENT_ID!r}, client_secret={CLIENT_SECRET!r}),"
    " host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
)


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-c", SERVER.replace("{port}", str(port))], cwd=os.getcwd())
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sandbox/requests", timeout=0.2)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the sandbox server did not start")


async def refresh_tokens(url: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url) as control:
        account = (await control.post("/_sandbox/accounts", json={"email": "bench@example.test"})).json()
        tokens = []
        for _ in range(count):
            grant = await control.post("/_sandbox/tokens", json={"sub": account["sub"]})
            tokens.append(grant.json()["refresh_token"])
        return tokens


async def measure(client: httpx.AsyncClient, url: str, tokens: list[str], requests: int, in_flight: int) -> float:
    """Client CPU seconds per refresh, with `in_flight` refreshes running at once."""
    provider = OAuthProvider(client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                             token_url=f"{url}/token", auth_url=f"{url}/authorize",
                             retry=RetryPolicy(tries=1))  # fmt: skip
    queue = iter(range(requests))

    async def lane() -> None:
        for index in queue:
            await provider.refresh(tokens[index % len(tokens)])

    await asyncio.gather(*(lane() for _ in range(10)))  # warm-up: connections, TLS-free keep-alive pools
    queue = iter(range(requests))
    started = time.process_time()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return (time.process_time() - started) / requests


CLIENTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx default transport (baseline)": lambda: httpx.AsyncClient(timeout=10),
    "httpx + aiohttp transport (ours)": lambda: make_http_client(10),
}


async def run(url: str, requests: int) -> None:
    tokens = await refresh_tokens(url, 50)
    print(f"{'client':38} {'in flight':>9} {'CPU/refresh':>12} {'refresh/s of CPU':>17} {'vs baseline':>12}")
    for in_flight in (1, 20):
        baseline = None
        for name, factory in CLIENTS.items():
            async with factory() as client:
                seconds = await measure(client, url, tokens, requests, in_flight)
            baseline = baseline or seconds
            print(
                f"{name:38} {in_flight:>9} {seconds * 1000:>9.3f} ms {1 / seconds:>17,.0f} {baseline / seconds:>11.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18731)
    args = parser.parse_args()
    server = start_server(args.port)
    try:
        asyncio.run(run(f"http://127.0.0.1:{args.port}", args.requests))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
