"""One scenario end to end: fresh database and Redis, sandbox, mailboxes, the worker, the plan, the metrics.

Why this order: the mailboxes are imported through the real bulk import and given refresh times spread
over one token lifetime (as if they had connected at random moments), so the worker meets a steady
state from its first second; the clock of the scenario starts when the worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.applications import Starlette

from devkit.sandbox import DIALECT_MOUNTS, create_sandboxes, sandbox_states, sandboxes_environment
from devkit.serving import serve_in_thread
from devkit.simulate import metrics
from devkit.simulate.driver import Driver, GroundTruth
from devkit.simulate.model import Truth
from devkit.simulate.records import Clock, Record, collect
from devkit.simulate.scenarios import Plan
from devkit.simulate.services import SimulationError, SmtpSink, fresh_database, fresh_redis
from devkit.simulate.timing import Compression, token_lifetime, worker_environment
from devkit.worker_process import WorkerProcess
from statemachine.core.secrets import TokenCipher
from statemachine.services.importer import import_mailboxes
from statemachine.services.settings import load_settings
from statemachine.store.db import Sessionmaker, open_sessionmaker
from statemachine.store.models import Mailbox

CLIENT_ID = "tokenwarden-simulate.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-simulate-not-a-secret"
TOLERANCE_REAL_SECONDS = 0.5  # clock skew between a row's database time and the worker's


@dataclass(frozen=True)
class Services:
    """What every scenario of a run shares."""

    admin_url: str
    smtp: SmtpSink
    encryption_key: str
    workdir: Path
    environ: Mapping[str, str]  # the caller's environment: REDIS_URL, and TOKENWARDEN_* values to scale


@dataclass(frozen=True)
class ScenarioResult:
    plan: Plan
    compression: Compression
    ours: metrics.Metrics
    naive: metrics.Metrics
    truth: GroundTruth
    incidents: list[dict[str, Any]]
    real_seconds: float


def token(number: int) -> str:
    return f"1//simulate-refresh-token-{number:06d}"


def address(number: int) -> str:
    return f"box{number:06d}@simulate.test"


def sandbox_app(plan: Plan, c: Compression) -> Starlette:
    """Every sandbox provider in one server, each knowing the accounts and tokens of its mailboxes."""
    app = create_sandboxes(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, access_token_lifetime=token_lifetime(c))
    states = sandbox_states(app)
    for number in range(plan.mailboxes):
        state = states[plan.provider_of(number)]
        account = state.add_account(address(number))
        state.add_grant(account.sub, refresh_token=token(number))
    return app


def service_environment(services: Services, database: str, redis: str, sandbox: str, c: Compression) -> dict[str, str]:
    base = {k: v for k, v in services.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env = {**base, "DATABASE_URL": database, "REDIS_URL": redis, "SMTP_URL": services.smtp.url}
    env |= sandboxes_environment(sandbox, CLIENT_ID, CLIENT_SECRET)
    env["TOKENWARDEN_ENCRYPTION_KEYS"] = services.encryption_key
    env |= worker_environment(load_settings(services.environ), c)
    return env


async def populate(sessionmaker: Sessionmaker, env: Mapping[str, str], plan: Plan) -> dict[int, int]:
    """Import the mailboxes (one owner each) through the real bulk import; map mailbox number -> id."""
    settings = load_settings(env)
    lines = (
        json.dumps(
            {
                "user": f"owner-{address(n)}",
                "provider": plan.provider_of(n),
                "address": address(n),
                "refresh_token": token(n),
            }
        )
        for n in range(plan.mailboxes)
    )
    cipher = TokenCipher(settings.encryption_keys)
    report = await import_mailboxes(sessionmaker, lines, cipher, settings.policy, lambda: datetime.now(UTC))
    if report.problems or report.imported != plan.mailboxes:
        raise SimulationError(f"importing the mailboxes failed: {report.problems[:3]}")
    async with sessionmaker() as session:
        rows = (await session.execute(select(Mailbox.address, Mailbox.id))).all()
    numbers = {address(n): n for n in range(plan.mailboxes)}
    return {numbers[a]: mailbox_id for a, mailbox_id in rows}


async def spread_first_refreshes(
    sessionmaker: Sessionmaker, plan: Plan, ids: Mapping[int, int], seconds: float
) -> None:
    """First refreshes uniformly over `seconds` from now: a steady state, not a thundering herd.

    The moments come from the plan's seed, so the same seed meets the same faults at the same mailboxes
    (up to the machine's timing). They were PostgreSQL's unseeded `random()`, which left the small test
    run's outage detection to the luck of each draw.
    """
    rng = random.Random(f"{plan.scenario}:{plan.seed}:spread")
    now = datetime.now(UTC)
    moments = [{"id": ids[n], "next_refresh_at": now + timedelta(seconds=rng.random() * seconds)} for n in sorted(ids)]
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Mailbox), moments)


def _metrics(plan: Plan, c: Compression, truth: GroundTruth, record: Record) -> tuple[metrics.Metrics, metrics.Metrics]:
    facts = Truth(plan.mailboxes, truth.revoked, record.final_states, truth.outage, truth.misconfig)
    tolerance = c.simulated_minutes(TOLERANCE_REAL_SECONDS)
    ours = metrics.ours(record.cycles, record.changes, record.emails, facts, tolerance)
    return ours, metrics.naive(record.cycles, facts)


async def run_scenario(plan: Plan, c: Compression, services: Services, say: Callable[[str], None]) -> ScenarioResult:
    """Run `plan` with a fresh database, Redis and sandbox; everything started here is stopped here."""
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        database = await stack.enter_async_context(fresh_database(services.admin_url, plan.scenario))
        redis = await stack.enter_async_context(fresh_redis(services.environ))
        sandbox = stack.enter_context(serve_in_thread(sandbox_app(plan, c)))
        env = service_environment(services, database, redis, sandbox.url, c)
        sessionmaker = await stack.enter_async_context(open_sessionmaker(database, pool_size=2))
        ids = await populate(sessionmaker, env, plan)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=sandbox.url, timeout=10))
        settings = load_settings(env)
        worker = WorkerProcess(env, services.workdir / f"worker-{plan.scenario}.log", settings.shutdown_grace_seconds)
        stack.push_async_callback(asyncio.to_thread, worker.stop)
        await spread_first_refreshes(sessionmaker, plan, ids, token_lifetime(c) - settings.policy.refresh_lead_seconds)
        clock = Clock(datetime.now(UTC), c.minute_seconds)
        worker.start()
        driver = Driver(
            plan, c, clock, sessionmaker, http, worker,
            tokens={mailbox_id: token(n) for n, mailbox_id in ids.items()},
            mounts={mailbox_id: DIALECT_MOUNTS[plan.provider_of(n)] for n, mailbox_id in ids.items()},
            untouched=set(ids.values()),
            stall_seconds=3 * settings.http_timeout_seconds, say=say,
        )  # fmt: skip
        truth = await driver.run()
        await asyncio.to_thread(worker.stop)
        async with sessionmaker() as session:
            record = await collect(session, clock, services.smtp.delivered)
    ours, naive = _metrics(plan, c, truth, record)
    return ScenarioResult(plan, c, ours, naive, truth, record.incidents, time.monotonic() - began)
