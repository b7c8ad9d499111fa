"""One chaos run: start everything, replay the fault schedule, let the fleet settle, check, print the table.

Reuses the simulator's pieces (sandbox population, bulk import, time compression, worker environment)
and the embedded servers; what is new here is the schedule, the faults themselves and the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from devkit.chaos import checks, schedule, webhook_checks
from devkit.chaos.proxy import ResettingProxy
from devkit.chaos.smtp import RecordingSmtp, recording_smtp
from devkit.chaos.webhooks import WebhookReceiver, subscribe, webhook_receiver
from devkit.embedded import EmbeddedRedis, embedded_redis, restart_embedded_postgres, start_embedded_postgres
from devkit.sandbox import SandboxState, sandbox_states
from devkit.serving import serve_in_thread
from devkit.simulate.runner import (
    Services,
    populate,
    sandbox_app,
    service_environment,
    spread_first_refreshes,
)
from devkit.simulate.scenarios import Plan
from devkit.simulate.services import SmtpSink, fresh_database
from devkit.simulate.timing import Compression, token_lifetime
from devkit.worker_process import WorkerProcess
from statemachine.cli.output import print_table
from statemachine.services.settings import load_settings
from statemachine.store.db import Sessionmaker, open_sessionmaker

MAILBOXES = 2000
WORKERS = 3
COMPRESSION = Compression(minute_seconds=1.5)  # an access token lives 90 real seconds
CHECK_EVERY_SECONDS = 5.0
# An email's claim outlives its send deadline (tries x timeout) by a minute; with the defaults (30 s
# timeouts) a worker killed mid-delivery would hold its row past the end of the run.
SMTP_TIMINGS = {"TOKENWARDEN_SMTP_TIMEOUT_SECONDS": "5", "TOKENWARDEN_SMTP_RETRY_BASE_SECONDS": "0.2"}
# The receiver is on 127.0.0.1; its 500s and drops are retried in seconds rather than the default half-minutes.
WEBHOOK_SETTINGS = {
    "TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE": "true",
    "TOKENWARDEN_WEBHOOK_TIMEOUT_SECONDS": "5",
    "TOKENWARDEN_WEBHOOK_RETRY_BASE_SECONDS": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """The worker processes, kept at full strength as a supervisor would: a killed or exited one is restarted."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.workers = [WorkerProcess(env, workdir / f"worker-{n}.log", 5.0) for n in range(WORKERS)]
        self.kills = self.exits = 0

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def kill_one(self) -> None:
        worker = random.choice([w for w in self.workers if w.proc is not None and w.proc.poll() is None])
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        self.kills += 1
        worker.start()

    def revive(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                self.exits += 1  # it exited by itself (Redis or PostgreSQL gone too long): a supervisor restarts it
                worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@contextlib.contextmanager
def web_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """`tokenwarden serve` as an operator runs it; yields its URL once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "statemachine.cli.main", "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env={**env, "TOKENWARDEN_BASE_URL": url}, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/healthz", timeout=1)
                break
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


class Injector:
    """Applies each fault of the schedule; remembers crashes (for the crash-window check) and revoked grants."""

    def __init__(self, fleet: Fleet, sandbox: SandboxState, control: httpx.AsyncClient, proxy: ResettingProxy,
                 smtp: RecordingSmtp, redis: EmbeddedRedis, pgdata_dir: Path) -> None:  # fmt: skip
        self.fleet, self.sandbox, self.control, self.proxy, self.smtp = fleet, sandbox, control, proxy, smtp
        self.redis, self.pgdata_dir = redis, pgdata_dir
        self.crashes: list[tuple[float, float]] = []
        self.revoked: set[str] = set()

    async def apply(self, fault: schedule.Fault) -> None:
        name = fault.name
        if name == schedule.KILL:
            self.crashes.append((time.time(), time.time()))
            await asyncio.to_thread(self.fleet.kill_one)
        elif name.startswith("token endpoint"):
            await self._provider_window(fault)
        elif name.startswith("revoke"):
            share = 0.02 if "2 %" in name else 0.01
            grants = [g for g in list(self.sandbox.grants.values()) if g.sub not in self.revoked]
            for grant in random.sample(grants, int(len(grants) * share)):
                self.revoked.add(grant.sub)
                self.sandbox.grants.pop(grant.refresh_token, None)
        elif name.startswith("SMTP"):
            self.smtp.dropping = True
            await asyncio.sleep(fault.seconds)
            self.smtp.dropping = False
        elif name == "Redis FLUSHALL":
            client = Redis.from_url(self.redis.url)
            await client.flushall()
            await client.aclose()
        elif name == "Redis restart":
            await asyncio.to_thread(self.redis.restart)
        elif name == "PostgreSQL restart":
            began = time.time()
            await asyncio.to_thread(restart_embedded_postgres, self.pgdata_dir)
            self.crashes.append((began, time.time()))

    async def _provider_window(self, fault: schedule.Fault) -> None:
        if "resets" in fault.name:
            self.proxy.resetting = True
            await asyncio.sleep(fault.seconds)
            self.proxy.resetting = False
            return
        spec: dict[str, object] = {"mode": "timeout", "seconds": 3}
        if "503" in fault.name:
            spec = {"mode": "http_5xx", "status": 503}
        elif "429" in fault.name:
            spec = {"mode": "rate_limit", "retry_after": 2}
        (await self.control.post("/_sandbox/faults", json=spec)).raise_for_status()
        await asyncio.sleep(fault.seconds)
        (await self.control.delete("/_sandbox/faults")).raise_for_status()


async def replay(injector: Injector, say: Callable[[str], None]) -> None:
    """Run the schedule on the real clock; the fleet is revived between faults."""
    began = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for fault in schedule.SCHEDULE:
        while (wait := began + fault.at - time.monotonic()) > 0:
            injector.fleet.revive()
            await asyncio.sleep(min(wait, 0.5))
        say(f"  {fault.describe()}")
        task = asyncio.create_task(injector.apply(fault))  # windows overlap the next blows
        pending.add(task)
        task.add_done_callback(pending.discard)
    while time.monotonic() < began + schedule.FAULTS_END:
        injector.fleet.revive()
        await asyncio.sleep(0.5)
    await asyncio.gather(*pending)


async def settle(
    sessionmaker: Sessionmaker, facts: Callable[[], checks.Facts], receiver: WebhookReceiver, fleet: Fleet
) -> list[checks.Promise]:
    """Check every few seconds until every promise holds or the settling time is over; return the last check."""
    deadline = time.monotonic() + schedule.SETTLE_SECONDS
    while True:
        fleet.revive()
        promises = await checks.check(sessionmaker, facts())
        promises += await webhook_checks.webhook_promises(sessionmaker, receiver)
        if all(p.kept for p in promises) or time.monotonic() > deadline:
            return promises
        await asyncio.sleep(CHECK_EVERY_SECONDS)


@contextlib.asynccontextmanager
async def servers(workdir: Path) -> AsyncIterator[tuple[str, EmbeddedRedis]]:
    with start_embedded_postgres(workdir) as admin_url, embedded_redis(workdir) as redis:
        yield admin_url, redis


async def run(say: Callable[[str], None]) -> bool:
    """The whole suite; True when every promise was kept."""
    workdir = Path(tempfile.mkdtemp(prefix="twchaos", dir="/tmp"))
    say(f"chaos: {MAILBOXES} mailboxes, {WORKERS} workers, strict rotation; logs in {workdir}")
    say("fault schedule:")
    for fault in schedule.SCHEDULE:
        say(f"  {fault.describe()}")
    plan = Plan(scenario="chaos", minutes=0.0, mailboxes=MAILBOXES)
    async with contextlib.AsyncExitStack() as stack:
        admin_url, redis = await stack.enter_async_context(servers(workdir))
        smtp_url, smtp = await stack.enter_async_context(recording_smtp())
        hooks_url, receiver = await stack.enter_async_context(webhook_receiver())
        database = await stack.enter_async_context(fresh_database(admin_url, "chaos"))
        app = sandbox_app(plan, COMPRESSION)
        states = sandbox_states(app)
        sandbox = states["google"]  # the plan's mailboxes are all Google's; strict rotation in every dialect
        for state in states.values():
            state.strict_rotation = True
            for grant in state.grants.values():
                grant.rotate = True
        served = stack.enter_context(serve_in_thread(app))
        proxy = ResettingProxy(int(served.url.rsplit(":", 1)[1]))
        proxy_url = proxy.start()
        stack.callback(proxy.stop)
        services = Services(admin_url, SmtpSink(url=smtp_url), Fernet.generate_key().decode(), workdir, {})
        env = {**os.environ, **service_environment(services, database, redis.url, served.url, COMPRESSION)}
        env |= {"GOOGLE_TOKEN_URL": f"{proxy_url}/token", "TOKENWARDEN_SECRET_KEY": Fernet.generate_key().decode()}
        env |= SMTP_TIMINGS | WEBHOOK_SETTINGS
        sessionmaker = await stack.enter_async_context(open_sessionmaker(database, pool_size=2))
        ids = await populate(sessionmaker, env, plan)
        settings = load_settings(env)
        await subscribe(sessionmaker, settings, hooks_url, receiver)
        lifetime = token_lifetime(COMPRESSION) - settings.policy.refresh_lead_seconds
        await spread_first_refreshes(sessionmaker, plan, ids, lifetime)
        web_url = stack.enter_context(web_process(env, workdir / "web.log"))
        fleet = Fleet(env, workdir)
        stack.callback(fleet.stop)
        fleet.start()
        control = await stack.enter_async_context(httpx.AsyncClient(base_url=served.url, timeout=10))
        injector = Injector(fleet, sandbox, control, proxy, smtp, redis, workdir)
        say("running the schedule:")
        began = time.time()
        await replay(injector, say)
        say(f"faults over; settling (at most {schedule.SETTLE_SECONDS:g} s)")
        subs = {account.email: account.sub for account in sandbox.accounts.values()}

        def facts() -> checks.Facts:
            return checks.Facts(sandbox, smtp, tuple(injector.crashes), frozenset(injector.revoked), subs)

        promises = await settle(sessionmaker, facts, receiver, fleet)
        for sub, retired_at in sorted(sandbox.revoked_by_reuse.items(), key=lambda item: item[1]):
            why = "a kill or restart in the crash window" if checks.explained(retired_at, injector.crashes) else "NONE"
            say(f"  grant {sub} revoked for reuse; its token rotated at t+{retired_at - began:.1f} s; cause: {why}")
        healthz = (await control.get(f"{web_url}/healthz")).status_code
    promises.append(checks.Promise("web app /healthz after the faults", str(healthz), healthz == 200))
    promises.append(checks.Promise("worker SIGKILLs / exits restarted", f"{fleet.kills} / {fleet.exits}", True))
    promises.append(checks.Promise("connections reset / SMTP drops after DATA", f"{proxy.resets} / {smtp.dropped}",
                                   True))  # fmt: skip
    print_table([{"promise": p.promise, "found": p.found, "kept": "yes" if p.kept else "NO"} for p in promises],
                ("promise", "found", "kept"))  # fmt: skip
    return all(p.kept for p in promises)


def main() -> int:
    return 0 if asyncio.run(run(lambda line: print(line, flush=True))) else 1
