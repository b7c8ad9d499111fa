"""`tokenwarden demo` end to end, as `make demo` runs it, in a temporary data folder and on a free port.

It must start everything, print working sign-in links, let a mailbox be broken from
`tokenwarden sandbox`, show the consequence (the state on the dashboard and the API, the email in
/dev/mail), and leave no server behind after a Ctrl-C. The machine may run its own PostgreSQL and
Redis, so the servers are checked by the process ids the demo started, never by name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.web.support import ROOT, free_port

pytestmark = pytest.mark.slow
LINK = re.compile(r"^ +(operator|user) +(\S+) +(http://\S+/login\?token=\S+)$", re.M)
START_SECONDS = 75
DEMO = [sys.executable, "-m", "statemachine.cli.main", "demo"]
SANDBOX = [sys.executable, "-m", "statemachine.cli.main", "sandbox"]
BROKEN = "olivia@gmail.test"  # the operator's own mailbox, healthy in the demo data


def wait_for(check: Callable[[], Any], seconds: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {seconds} s; the demo printed:\n{log.read_text(errors='replace')}")


def links(log: Path, proc: subprocess.Popen[bytes]) -> dict[str, str]:
    assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
    found = {role: link for role, _, link in LINK.findall(log.read_text(errors="replace"))}
    return found if len(found) == 2 else {}


def servers(demo_pid: int, data: Path) -> dict[int, float]:
    """Every process the demo started (worker, redis-server) and the embedded PostgreSQL's, with start times."""
    processes = psutil.Process(demo_pid).children(recursive=True)
    postmaster = psutil.Process(int((data / "pgdata" / "postmaster.pid").read_text().split()[0]))
    processes += [postmaster, *postmaster.children(recursive=True)]
    return {p.pid: p.create_time() for p in processes}


def alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sign_in(base: str, link: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    token = re.search(r'name="token" value="([^"]+)"', client.get(link).text)
    assert token is not None
    assert client.post("/login", data={"token": token.group(1)}).status_code == 303
    return client


def break_and_watch(client: httpx.Client, data: Path, log: Path) -> None:
    """Revoke the operator's mailbox with `tokenwarden sandbox fault`; see it disconnect and the email arrive."""
    mailboxes = client.get("/api/mailboxes?all=1").json()["mailboxes"]
    mailbox = next(m for m in mailboxes if m["address"] == BROKEN)
    assert mailbox["state"] == "healthy"
    command = [*SANDBOX, "fault", str(mailbox["id"]), "--mode", "revoke", "--data-dir", str(data)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Mailbox {mailbox['id']}: the sandbox Google now answers access revoked")
    assert "1//sandbox-" not in done.stdout + done.stderr  # the refresh token is never printed
    url = f"/api/mailboxes/{mailbox['id']}"
    wait_for(lambda: client.get(url).json()["state"] == "disconnected", 40, "disconnect", log)
    assert f'data-mailbox="{mailbox["id"]}" data-state="disconnected"' in client.get("/").text
    subject = f"Please reconnect your Gmail account {BROKEN}"

    def mail_list() -> str:
        page = client.get("/dev/mail").text
        return page if subject in page else ""

    listing = wait_for(mail_list, 20, "email", log)
    key = re.search(rf'href="/dev/mail/([^"]+)">{re.escape(subject)}<', listing)
    assert key is not None
    assert "access to your Gmail account" in client.get(f"/dev/mail/{key.group(1)}").text


def break_a_microsoft_mailbox(client: httpx.Client, data: Path) -> None:
    """The demo has Outlook / Microsoft 365 mailboxes in several states; `tokenwarden sandbox fault` breaks them too."""
    mailboxes = client.get("/api/mailboxes?all=1").json()["mailboxes"]
    outlook = {m["address"]: m for m in mailboxes if m["provider"] == "microsoft"}
    assert {m["state"] for m in outlook.values()} >= {"healthy", "disconnected"}
    mailbox = outlook["ana@contoso.test"]
    command = [*SANDBOX, "fault", str(mailbox["id"]), "--mode", "revoke", "--count", "1", "--data-dir", str(data)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Mailbox {mailbox['id']}: the sandbox Microsoft now answers access revoked")
    assert "0.AX-sandbox-" not in done.stdout + done.stderr


def test_the_demo_starts_everything_shows_a_breakage_and_stops_cleanly(tmp_path: Path) -> None:
    data, log, port = tmp_path / "demo-data", tmp_path / "demo.out", free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    with log.open("wb") as out:
        command = [*DEMO, "--data-dir", str(data), "--port", str(port)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    started: dict[int, float] = {}
    try:
        found = wait_for(lambda: links(log, proc), START_SECONDS, "sign-in links", log)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        started = servers(proc.pid, data)
        assert len(started) >= 3  # the worker, redis-server, postgres (and its helpers)
        client = sign_in(base, found["operator"])
        try:
            break_and_watch(client, data, log)
            break_a_microsoft_mailbox(client, data)
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        status = proc.wait(60)
    output = log.read_text(errors="replace")
    assert status == 0, output
    assert "stopped: the worker, the web app" in output
    assert [pid for pid, created in started.items() if alive(pid, created)] == []
    assert not (data / "run.json").exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the web app is gone too
