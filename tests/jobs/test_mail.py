"""Outbox delivery through real PostgreSQL, real Redis (an arq burst worker) and a real local SMTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from prometheus_client import REGISTRY
from sqlalchemy import text

import jobs.mail
from jobs.mail import claim, deliver_notification, sweep_outbox
from statemachine.core.errors import Verdict
from statemachine.core.states import EmailKind, FailureKind
from statemachine.mail import mailer
from statemachine.services.runtime import Runtime
from statemachine.store import outbox
from statemachine.store.models import Mailbox, User
from tests.database import service_environment
from tests.factories import add_mailbox
from tests.smtp import PERMANENT, SmtpServer, smtp_server_fixture  # noqa: F401

SMTP_PASSWORD = "smtp-pass-SECRET-42"
KIND = EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE


@pytest.fixture
def env(database_url: str, smtp_server: SmtpServer) -> dict[str, str]:
    """Quick in-job retries, a 60 s outbox backoff (tests move `next_attempt_at` instead of waiting)."""
    return service_environment(
        database_url,
        SMTP_URL=smtp_server.url(),
        TOKENWARDEN_SMTP_TIMEOUT_SECONDS="2",
        TOKENWARDEN_SMTP_RETRY_BASE_SECONDS="0",
        TOKENWARDEN_OUTBOX_RETRY_BASE_SECONDS="60",
    )


def ctx_for(runtime: Runtime, redis: ArqRedis) -> dict[str, Any]:
    return {"runtime": runtime, "redis": redis}


async def drain(runtime: Runtime, redis: ArqRedis) -> None:
    """Run every queued job with a burst worker, as `tokenwarden worker` would."""
    worker = Worker(
        functions=jobs.mail.functions,
        redis_pool=redis,
        ctx={"runtime": runtime},
        burst=True,
        poll_delay=0.01,
        handle_signals=False,
        keep_result=0,
    )
    await worker.main()


async def queue_email(runtime: Runtime, kind: EmailKind = KIND, address: str = "ana@gmail.test") -> int:
    """An outbox row as the core writes it: one mailbox, one rendered email; returns the row id."""
    mailbox_id = await add_mailbox(runtime, "1//refresh-SECRET", address=address)
    verdict = Verdict(FailureKind.PERMANENT, "invalid_grant", "Google says access was revoked.")
    async with runtime.sessionmaker() as session, session.begin():
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.token_refresh_failed_at = datetime.now(UTC)
        user = await session.get(User, mailbox.user_id)
        assert user is not None
        facts = outbox.EmailFacts(runtime.events.reconnect_url(mailbox_id), verdict, None)
        await outbox.queue(
            session, [outbox.notification_values(mailbox, user, kind, facts, runtime.events.mail_domain)]
        )
        return int(await session.scalar(text("select max(id) from notifications")))


async def row(runtime: Runtime, notification_id: int) -> dict[str, Any]:
    async with runtime.sessionmaker() as session:
        result = await session.execute(
            text("select *, next_attempt_at - now() as wait from notifications where id = :id"), {"id": notification_id}
        )
        return dict(result.one()._mapping)


async def make_due(runtime: Runtime) -> None:
    """Let the outbox backoff pass without waiting for it."""
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("update notifications set next_attempt_at = now() where status = 'pending'"))


def failure_to_email_count(kind: str = KIND.value) -> float:
    """Observations of the delay before an email of `kind` (the alert rule watches the permanent-failure one)."""
    return REGISTRY.get_sample_value("tokenwarden_failure_to_email_seconds_count", {"kind": kind}) or 0.0


def emails_total(kind: str, result: str) -> float:
    return REGISTRY.get_sample_value("tokenwarden_emails_total", {"kind": kind, "result": result}) or 0.0


async def test_an_outbox_row_is_delivered_once_with_its_own_headers(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    sent_before = emails_total(KIND, "sent")
    assert await sweep_outbox(ctx_for(runtime, arq_redis)) == {"due": 1, "enqueued": 1}
    await drain(runtime, arq_redis)
    stored = await row(runtime, notification_id)
    (message,) = smtp_server.messages
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert (message["To"], message["Subject"]) == ("owner@example.test", stored["subject"])
    assert message["Message-ID"] == stored["message_id"]
    assert message["From"] == "Tokenwarden <noreply@tokenwarden.test>"
    assert (stored["status"], stored["attempts"], stored["locked_until"]) == ("sent", 1, None)
    assert stored["sent_at"] is not None
    assert emails_total(KIND, "sent") == sent_before + 1
    assert await deliver_notification(ctx_for(runtime, arq_redis), notification_id) == "skipped"
    assert await sweep_outbox(ctx_for(runtime, arq_redis)) == {"due": 0, "enqueued": 0}
    assert len(smtp_server.messages) == 1


async def test_a_second_sweep_before_the_job_ran_enqueues_nothing_new(runtime, arq_redis, smtp_server) -> None:
    await queue_email(runtime)
    assert await sweep_outbox(ctx_for(runtime, arq_redis)) == {"due": 1, "enqueued": 1}
    assert await sweep_outbox(ctx_for(runtime, arq_redis)) == {"due": 1, "enqueued": 0}
    await drain(runtime, arq_redis)
    assert len(smtp_server.messages) == 1


async def test_a_job_left_by_a_killed_worker_before_its_claim_does_not_hold_the_row(
    runtime, arq_redis, smtp_server
) -> None:
    """arq keeps a killed worker's job (and refuses its id) for minutes; the row is swept anew after a lock time."""
    notification_id = await queue_email(runtime)
    stuck = jobs.mail.job_id(notification_id, 0)
    await arq_redis.enqueue_job(jobs.mail.DELIVER_JOB, notification_id, _job_id=stuck, _queue_name="arq:queue:dead")
    ctx = ctx_for(runtime, arq_redis)
    assert await sweep_outbox(ctx) == {"due": 1, "enqueued": 0}
    stale = jobs.mail.lock_seconds(runtime.settings) + 1
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text(f"update notifications set next_attempt_at = now() - interval '{stale} seconds'"))
    assert await sweep_outbox(ctx) == {"due": 1, "enqueued": 1}
    await drain(runtime, arq_redis)
    assert (await row(runtime, notification_id))["status"] == "sent"
    assert len(smtp_server.messages) == 1


async def test_two_concurrent_jobs_for_one_row_send_one_mail(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    ctx = ctx_for(runtime, arq_redis)
    results = await asyncio.gather(*(deliver_notification(ctx, notification_id) for _ in range(3)))
    assert sorted(results) == ["sent", "skipped", "skipped"]
    assert len(smtp_server.messages) == 1


async def test_a_temporary_failure_is_retried_with_backoff_then_delivered_once(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    smtp_server.handler.fail_next(4, "451 4.3.0 Mailbox busy, try again later")
    ctx = ctx_for(runtime, arq_redis)
    assert await deliver_notification(ctx, notification_id) == "retry"  # three quick tries, all 451
    first = await row(runtime, notification_id)
    assert (first["status"], first["attempts"], first["locked_until"]) == ("pending", 1, None)
    assert "451" in first["last_error"]
    assert 55 <= first["wait"].total_seconds() <= 60  # pushed out by TOKENWARDEN_OUTBOX_RETRY_BASE_SECONDS
    assert await sweep_outbox(ctx) == {"due": 0, "enqueued": 0}  # not due yet
    await make_due(runtime)
    assert await sweep_outbox(ctx) == {"due": 1, "enqueued": 1}
    await drain(runtime, arq_redis)  # one more 451, then accepted within the same job
    final = await row(runtime, notification_id)
    assert (final["status"], final["attempts"], final["last_error"]) == ("sent", 2, None)
    assert smtp_server.handler.attempts == 5
    assert [m["Message-ID"] for m in smtp_server.messages] == [final["message_id"]]


async def test_the_outbox_backoff_doubles_per_attempt(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    smtp_server.handler.fail_next(6)
    ctx = ctx_for(runtime, arq_redis)
    waits = []
    for _ in range(2):
        await make_due(runtime)
        assert await deliver_notification(ctx, notification_id) == "retry"
        waits.append(round((await row(runtime, notification_id))["wait"].total_seconds() / 10) * 10)
    assert waits == [60, 120]


async def test_an_smtp_outage_is_temporary_and_mail_goes_out_when_it_is_back(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    await smtp_server.stop()
    ctx = ctx_for(runtime, arq_redis)
    assert await deliver_notification(ctx, notification_id) == "retry"
    assert "Connect" in (await row(runtime, notification_id))["last_error"]
    await smtp_server.restart()
    await make_due(runtime)
    await sweep_outbox(ctx)
    await drain(runtime, arq_redis)
    assert (await row(runtime, notification_id))["status"] == "sent"
    assert len(smtp_server.messages) == 1


async def test_a_permanent_failure_is_recorded_and_not_retried(runtime, arq_redis, smtp_server) -> None:
    notification_id = await queue_email(runtime)
    smtp_server.handler.fail_next(1, PERMANENT, at="RCPT")
    failed_before = emails_total(KIND, "failed")
    ctx = ctx_for(runtime, arq_redis)
    assert await sweep_outbox(ctx) == {"due": 1, "enqueued": 1}
    await drain(runtime, arq_redis)
    stored = await row(runtime, notification_id)
    assert (stored["status"], stored["attempts"], stored["locked_until"]) == ("failed", 1, None)
    assert stored["last_error"].startswith("recipient refused: SMTP 550")
    assert emails_total(KIND, "failed") == failed_before + 1
    await make_due(runtime)
    assert await sweep_outbox(ctx) == {"due": 0, "enqueued": 0}
    assert await deliver_notification(ctx, notification_id) == "skipped"
    assert smtp_server.handler.attempts == 1
    assert smtp_server.messages == []


async def test_smtp_auth_uses_the_url_credentials(runtime, arq_redis, smtp_server) -> None:
    smtp_server.require_login("mailer", SMTP_PASSWORD)
    settings = dataclasses.replace(runtime.settings, smtp_url=smtp_server.url("mailer", SMTP_PASSWORD))
    ctx = ctx_for(dataclasses.replace(runtime, settings=settings), arq_redis)
    assert await deliver_notification(ctx, await queue_email(runtime)) == "sent"
    assert [r.login for r in smtp_server.handler.received] == ["mailer"]


async def test_rejected_credentials_fail_permanently_without_storing_the_password(
    runtime, arq_redis, smtp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp_server.require_login("mailer", "another-password")
    settings = dataclasses.replace(runtime.settings, smtp_url=smtp_server.url("mailer", SMTP_PASSWORD))
    ctx = ctx_for(dataclasses.replace(runtime, settings=settings), arq_redis)
    notification_id = await queue_email(runtime)
    assert await deliver_notification(ctx, notification_id) == "failed"
    stored = await row(runtime, notification_id)
    assert stored["last_error"].startswith("authentication failed: SMTP 535")
    assert SMTP_PASSWORD not in str(stored)
    assert SMTP_PASSWORD not in caplog.text


async def test_a_row_left_locked_by_a_crashed_worker_is_swept_and_sent_with_the_same_message_id(
    runtime, arq_redis, smtp_server
) -> None:
    notification_id = await queue_email(runtime)
    async with runtime.sessionmaker() as session, session.begin():  # a worker claims the row ...
        crashed = await claim(session, notification_id, seconds=300)
    assert crashed is not None
    ctx = ctx_for(runtime, arq_redis)
    assert await sweep_outbox(ctx) == {"due": 0, "enqueued": 0}  # ... and its lock is still live
    config = mailer.SmtpConfig.from_url(runtime.settings.smtp_url)  # SMTP accepts, then the worker dies
    await mailer.send(config, mailer.build_message(crashed.mail, runtime.settings.mail_from))
    async with runtime.sessionmaker() as session, session.begin():  # time passes: the lock expires
        await session.execute(text("update notifications set locked_until = now() - interval '1 second'"))
    assert await sweep_outbox(ctx) == {"due": 1, "enqueued": 1}
    await drain(runtime, arq_redis)
    stored = await row(runtime, notification_id)
    assert (stored["status"], stored["attempts"]) == ("sent", 2)
    assert [m["Message-ID"] for m in smtp_server.messages] == [stored["message_id"]] * 2
    assert smtp_server.messages[0].as_bytes() == smtp_server.messages[1].as_bytes()


async def test_attempts_run_out_after_the_configured_maximum(runtime, arq_redis, smtp_server) -> None:
    settings = dataclasses.replace(runtime.settings, outbox_max_attempts=2)
    ctx = ctx_for(dataclasses.replace(runtime, settings=settings), arq_redis)
    notification_id = await queue_email(runtime)
    smtp_server.handler.fail_next(6)
    assert await deliver_notification(ctx, notification_id) == "retry"
    await make_due(runtime)
    assert await deliver_notification(ctx, notification_id) == "failed"
    assert (await row(runtime, notification_id))["last_error"].startswith("gave up after 2 attempts: ")


async def test_failure_to_email_delay_is_observed_for_failure_emails_only(runtime, arq_redis, smtp_server) -> None:
    ctx = ctx_for(runtime, arq_redis)
    before = failure_to_email_count()
    assert await deliver_notification(ctx, await queue_email(runtime, EmailKind.RECONNECTED)) == "sent"
    assert failure_to_email_count(EmailKind.RECONNECTED.value) == 0
    assert failure_to_email_count() == before
    assert await deliver_notification(ctx, await queue_email(runtime, KIND, address="bob@gmail.test")) == "sent"
    assert failure_to_email_count() == before + 1
