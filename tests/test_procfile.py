"""The Procfile as a Heroku-style platform runs it, through honcho, on the tests' PostgreSQL and Redis.

The release step migrates a fresh database; then web and worker run side by side: the web app answers
/healthz on $PORT, the worker refreshes a due mailbox against the sandbox Google, both export the
metrics the alert rules and the Grafana dashboard name (docs/prometheus/), and one SIGTERM to honcho
stops both cleanly (their shutdown completes, no SIGKILL). `exec` in the Procfile makes the shell the
platform starts become the process, so the signal and the exit status are the app's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devkit.serving import RunningServer
from tests.database import service_environment
from tests.services import MakeDatabase
from tests.web.support import ROOT, SECRET_KEY, free_port

HONCHO = Path(sys.executable).with_name("honcho")
PROMETHEUS = ROOT / "docs" / "prometheus"
ACCOUNT = {"email": "ana@gmail.test", "sub": "104400000000000000001"}
STOP_SECONDS = 30


def query(url: str, sql: str) -> object:
    async def run() -> object:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(sql))).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(run())


def wait_for(what: str, check: Callable[[], bool], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} did not happen within {seconds:g} s; honcho's output:\n{log.read_text(errors='replace')}")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def exported_names(*exposition: str) -> set[str]:
    """Every series name a /metrics page may hold for its families (a histogram's _bucket, a counter's _total...)."""
    suffixes = ("", "_total", "_created", "_bucket", "_sum", "_count")
    families = [family for page in exposition for family in text_string_to_metric_families(page)]
    return {family.name + suffix for family in families for suffix in suffixes}


def named_metrics() -> set[str]:
    """The metric names the alert rules and the Grafana dashboard query."""
    rules = (PROMETHEUS / "alerts.yml").read_text()
    dashboard = json.loads((PROMETHEUS / "grafana-dashboard.json").read_text())
    exprs = [rules, *(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])]
    return {name for expr in exprs for name in re.findall(r"\btokenwarden_[a-z_]+\b", expr)}


@pytest.fixture
def platform_env(make_database: MakeDatabase, redis_url: str, sandbox: RunningServer) -> dict[str, str]:
    """What the platform would set: a fresh database, Redis, the secrets, and the sandbox as Google."""
    env = service_environment(
        make_database("procfile"),
        REDIS_URL=redis_url,
        GOOGLE_TOKEN_URL=f"{sandbox.url}/token",
        TOKENWARDEN_SECRET_KEY=SECRET_KEY,
        TOKENWARDEN_METRICS_PORT=str(free_port()),
        TOKENWARDEN_SCAN_INTERVAL_SECONDS="1",
        TOKENWARDEN_REFRESH_LEAD_SECONDS="2",  # a new mailbox is due within a second
        TOKENWARDEN_SHUTDOWN_GRACE_SECONDS="5",
        TOKENWARDEN_LOG_LEVEL="INFO",
    )
    return {**os.environ, "PATH": f"{HONCHO.parent}:{os.environ['PATH']}", **env}


@pytest.fixture
def honcho(platform_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `honcho start ARGS` in the repository root with its output in honcho.log; stops leftovers.

    honcho starts each process in a session of its own, so a leftover honcho gets SIGTERM (which it passes
    on) before SIGKILL: a killed honcho would leave its processes running.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / "honcho.log").open("ab") as log:
            process = subprocess.Popen([str(HONCHO), "start", "--no-colour", *args], cwd=ROOT, env=platform_env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_release_migrates_then_web_and_worker_run_and_stop_on_sigterm(
    honcho: Callable[..., subprocess.Popen[bytes]], platform_env: dict[str, str], sandbox: RunningServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    log, database = tmp_path / "honcho.log", platform_env["DATABASE_URL"]
    release = honcho("release")
    assert release.wait(timeout=120) == 0, log.read_text()
    assert query(database, "select count(*) from mailboxes") == 0  # the schema exists

    httpx.post(f"{sandbox.url}/_sandbox/accounts", json=ACCOUNT).raise_for_status()
    grant = httpx.post(f"{sandbox.url}/_sandbox/tokens", json={"email": ACCOUNT["email"]}).json()
    line = {"user": "ana@example.com", "provider": "google", "address": ACCOUNT["email"],
            "refresh_token": grant["refresh_token"]}  # fmt: skip
    subprocess.run([sys.executable, "-m", "statemachine.cli.main", "mailbox", "import", "-"], input=json.dumps(line),
                   text=True, env=platform_env, cwd=ROOT, check=True, capture_output=True)  # fmt: skip

    port = free_port()
    running = honcho("--port", str(port), "web", "worker")
    web, worker = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{platform_env['TOKENWARDEN_METRICS_PORT']}"
    wait_for("web answering /healthz on $PORT", lambda: answers(f"{web}/healthz"), log)
    assert httpx.get(f"{web}/healthz").json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    wait_for("the worker refreshing the due mailbox",
             lambda: query(database, "select count(*) from mailboxes where last_refreshed_at is not null") == 1,
             log)  # fmt: skip
    wait_for("the worker's metrics", lambda: answers(f"{worker}/metrics"), log)

    exported = exported_names(httpx.get(f"{web}/metrics").text, httpx.get(f"{worker}/metrics").text)
    assert named_metrics() - exported == set()
    assert len(named_metrics()) >= 8

    running.send_signal(signal.SIGTERM)
    running.wait(timeout=STOP_SECONDS)
    output = log.read_text(errors="replace")
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (its exit status says why it ended)
    assert re.search(r"web\.1\s+\| .*Application shutdown complete", output), output
    assert re.search(r"system\s+\| web\.1 stopped \(rc=(0|-15)\)", output), output
    assert re.search(r"worker\.1\s+\| .*worker stopped by signal", output), output
    assert re.search(r"system\s+\| worker\.1 stopped \(rc=0\)", output), output
    assert "SIGKILL" not in output
    # both processes said at start what is unsafe for production here (the sandbox as Google), and ran anyway
    assert len(re.findall(r"unsafe for production: GOOGLE_TOKEN_URL", output)) == 2
