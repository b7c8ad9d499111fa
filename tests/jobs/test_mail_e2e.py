"""End to end: failing refresh cycles -> outbox rows -> arq burst worker -> exactly the expected emails over SMTP.

The token endpoint is respx (as in tests/statemachine/test_cycle.py); PostgreSQL, Redis and the SMTP
server are real. Cron coroutines are called directly, with the reminders' clock as a parameter.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import text

from jobs.mail import sweep_outbox
from jobs.reminders import queue_reminders
from statemachine.services.cycle import run_cycle
from statemachine.services.runtime import Runtime
from statemachine.store.models import Mailbox
from tests.database import service_environment
from tests.factories import add_mailbox
from tests.jobs.test_mail import ctx_for, drain
from tests.smtp import SmtpServer, smtp_server_fixture  # noqa: F401

ACCESS = {"access_token": "ya29.access-SECRET", "expires_in": 3599}
REMINDER_DAYS = "0.0001,0.0002"  # 8.64 s and 17.28 s: the clock is passed in, nobody waits


@pytest.fixture
def env(database_url: str, smtp_server: SmtpServer) -> dict[str, str]:
    return service_environment(
        database_url,
        SMTP_URL=smtp_server.url(),
        TOKENWARDEN_SMTP_RETRY_BASE_SECONDS="0",
        TOKENWARDEN_REMINDER_DAYS=REMINDER_DAYS,
    )


async def deliver_all(runtime: Runtime, redis: ArqRedis) -> None:
    await sweep_outbox(ctx_for(runtime, redis))
    await drain(runtime, redis)


async def test_failing_cycles_reminders_and_recovery_send_exactly_the_expected_emails(
    runtime, arq_redis, smtp_server, provider
) -> None:
    provider.return_value = httpx.Response(503, text="unavailable")
    mailbox_id = await add_mailbox(runtime, "1//refresh-SECRET-e2e")
    states = [(await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")).outcome.to_state for _ in range(3)]
    assert states == ["retrying", "degraded", "disconnected"]
    await deliver_all(runtime, arq_redis)
    assert sorted(m["Subject"] for m in smtp_server.messages) == [  # one sweep: delivered concurrently
        "Action needed: reconnect your Gmail account ana@gmail.test",
        "We're having trouble connecting to your Gmail account ana@gmail.test",
    ]

    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        disconnected_at = mailbox.state_changed_at
    ctx = ctx_for(runtime, arq_redis)
    for seconds, queued in ((5, 0), (9, 1), (10, 0), (18, 1), (20, 0)):
        assert await queue_reminders(ctx, now=disconnected_at + timedelta(seconds=seconds)) == {"queued": queued}
    await deliver_all(runtime, arq_redis)
    reminders = [m for m in smtp_server.messages if m["Subject"].startswith("Reminder:")]
    assert len(reminders) == 2

    provider.return_value = httpx.Response(200, json=ACCESS)
    recovered = await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")
    assert recovered.outcome.to_state == "healthy"
    assert await queue_reminders(ctx, now=disconnected_at + timedelta(seconds=30)) == {"queued": 0}
    await deliver_all(runtime, arq_redis)
    await deliver_all(runtime, arq_redis)  # a second pass finds nothing left to send

    subjects = [m["Subject"] for m in smtp_server.messages]
    assert len(subjects) == 5
    assert subjects[-1] == "Your Gmail account ana@gmail.test is connected again"
    assert {m["To"] for m in smtp_server.messages} == {"owner@example.test"}
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(text("select status, message_id from notifications order by id"))).all()
    assert [r.status for r in rows] == ["sent"] * 5
    assert sorted(m["Message-ID"] for m in smtp_server.messages) == sorted(r.message_id for r in rows)
