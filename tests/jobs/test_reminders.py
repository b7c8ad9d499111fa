"""The reminders cron with delivery: a reminder goes out once; one for a mailbox that came back is not sent."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import respx
from sqlalchemy import text

from jobs.mail import deliver_notification, sweep_outbox
from jobs.reminders import queue_reminders
from statemachine.core.states import Event
from statemachine.services.cycle import run_cycle
from statemachine.services.operations import operator_action
from statemachine.services.runtime import Runtime
from statemachine.store.models import Mailbox
from tests.database import service_environment
from tests.factories import add_mailbox
from tests.jobs.test_mail import ctx_for, drain
from tests.smtp import SmtpServer, smtp_server_fixture  # noqa: F401

INVALID_GRANT = httpx.Response(400, json={"error": "invalid_grant"})


@pytest.fixture
def env(database_url: str, smtp_server: SmtpServer) -> dict[str, str]:
    return service_environment(database_url, SMTP_URL=smtp_server.url(), TOKENWARDEN_REMINDER_DAYS="0.0001")


async def disconnect(runtime: Runtime, provider: respx.Route) -> tuple[int, Mailbox]:
    provider.return_value = INVALID_GRANT
    mailbox_id = await add_mailbox(runtime, "1//refresh-SECRET")
    for _ in range(2):
        await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
    assert mailbox is not None
    return mailbox_id, mailbox


async def test_a_reminder_is_queued_once_and_delivered_once(runtime, arq_redis, smtp_server, provider) -> None:
    _, mailbox = await disconnect(runtime, provider)
    ctx = ctx_for(runtime, arq_redis)
    later = mailbox.state_changed_at + timedelta(seconds=10)
    assert await queue_reminders(ctx, now=later) == {"queued": 1}
    assert await queue_reminders(ctx, now=later) == {"queued": 0}
    await sweep_outbox(ctx)
    await drain(runtime, arq_redis)
    # two delivery jobs run at once in the burst worker: their order at the SMTP server is not fixed
    assert sorted(m["Subject"] for m in smtp_server.messages) == [
        "Please reconnect your Gmail account ana@gmail.test",
        "Reminder: your Gmail account ana@gmail.test is still disconnected",
    ]


async def test_a_reminder_for_a_mailbox_that_came_back_is_not_sent(runtime, arq_redis, smtp_server, provider) -> None:
    mailbox_id, mailbox = await disconnect(runtime, provider)
    ctx = ctx_for(runtime, arq_redis)
    assert await queue_reminders(ctx, now=mailbox.state_changed_at + timedelta(seconds=10)) == {"queued": 1}
    provider.return_value = httpx.Response(200, json={"access_token": "ya29.SECRET", "expires_in": 3599})
    await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, Event.OPS_RETRY_NOW, "operator:t", None)
    await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")  # recovered before the reminder went out
    async with runtime.sessionmaker() as session:
        reminder_id = await session.scalar(text("select id from notifications where kind = 'token_refresh_reminder'"))
    assert await deliver_notification(ctx, reminder_id) == "obsolete"
    await sweep_outbox(ctx)
    await drain(runtime, arq_redis)
    # the disconnection's email and the reconnection's: two delivery jobs at once, in no fixed order
    assert sorted(m["Subject"] for m in smtp_server.messages) == [
        "Please reconnect your Gmail account ana@gmail.test",
        "Your Gmail account ana@gmail.test is connected again",
    ]  # and no reminder
    async with runtime.sessionmaker() as session:
        status, error = (
            await session.execute(
                text("select status, last_error from notifications where id = :id"), {"id": reminder_id}
            )
        ).one()
    assert (status, error) == ("failed", "not sent: the mailbox is no longer disconnected")
