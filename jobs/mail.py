"""Email delivery from the outbox: the `sweep_outbox` cron and the `deliver_notification` job.

PostgreSQL is the scheduler (docs/transactions.md): the sweeper enqueues every due, unlocked `pending` row,
newly written ones as well as those a crashed worker left behind once their lock expired. The job
claims its row in a short transaction (lock + attempts+1, guarded by status, due time and lock), sends
outside any transaction, then records the result. A second job for the same row finds it locked or
sent and does nothing, so one row is never sent twice by two workers; the one crash window (SMTP
accepted, the row not yet marked) resends the same Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq.worker import func
from sqlalchemy import func as sql, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.metrics import EMAILS, FAILURE_TO_EMAIL
from jobs.sweep_ids import due_rows, sweep_job_id
from statemachine.core.states import EmailKind, State
from statemachine.mail import mailer
from statemachine.mail.mailer import DeliveryError, Mail, PermanentDeliveryError, SmtpConfig, TemporaryDeliveryError
from statemachine.services.runtime import Runtime
from statemachine.services.settings import Settings
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox, Notification

logger = logging.getLogger(__name__)

DELIVER_JOB = "deliver_notification"
SWEEP_BATCH = 500
LOCK_MARGIN_SECONDS = 60.0
OBSOLETE = "not sent: the mailbox is no longer disconnected"
# The delay users care about: from the start of the failure episode to the email about it.
FAILURE_KINDS = frozenset(
    {EmailKind.TOKEN_REFRESH_RETRY, EmailKind.TOKEN_REFRESH_FINAL_FAILURE, EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE}
)


@dataclass(frozen=True)
class ClaimedEmail:
    """A row this job holds until `locked_until`; `attempts` already counts this attempt."""

    id: int
    kind: str
    attempts: int
    mail: Mail
    obsolete: bool = False


def send_deadline_seconds(settings: Settings) -> float:
    """Worst case of the in-job tries: each try's timeout plus the backoff sleeps between them."""
    sleeps = settings.smtp_retry_base_seconds * 8 * max(settings.smtp_retry_tries - 1, 0)
    return settings.smtp_retry_tries * settings.smtp_timeout_seconds + sleeps


def lock_seconds(settings: Settings) -> float:
    """The claim outlives the send deadline, so a row is never sent by two live jobs at once."""
    return send_deadline_seconds(settings) + LOCK_MARGIN_SECONDS


def job_id(notification_id: int, attempts: int) -> str:
    """One arq job per (row, attempt): a retry gets a fresh id, as arq refuses an id whose result it still keeps."""
    return f"deliver:{notification_id}:{attempts}"


async def due_notifications(session: AsyncSession, limit: int = SWEEP_BATCH) -> list[tuple[int, int, float]]:
    """(id, attempts, seconds claimable) of pending rows that are due and not locked, oldest due first."""
    sendable = (Notification.status == "pending", Notification.next_attempt_at <= _now(), _unlocked())
    return await due_rows(session, Notification, sendable, limit)


async def claim(session: AsyncSession, notification_id: int, seconds: float) -> ClaimedEmail | None:
    """Lock one due row for this job; None if it is sent, failed, not due, or claimed by another job."""
    statement = (
        update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.status == "pending",
            Notification.next_attempt_at <= _now(),
            _unlocked(),
            Notification.mailbox_id == Mailbox.id,
        )
        .values(locked_until=_now() + timedelta(seconds=seconds), attempts=Notification.attempts + 1)
        .returning(Notification, Mailbox.state)
    )
    found = (await session.execute(statement)).one_or_none()
    if found is None:
        return None
    row: Notification = found[0]
    mail = Mail(row.recipient, row.subject, row.body_text, row.body_html, row.message_id, row.created_at)
    # A reminder says "still disconnected": once the mailbox is back, sending it would be wrong.
    obsolete = row.kind == EmailKind.TOKEN_REFRESH_REMINDER and found.state != State.DISCONNECTED
    return ClaimedEmail(row.id, row.kind, row.attempts, mail, obsolete)


async def mark_sent(session: AsyncSession, claimed: ClaimedEmail) -> tuple[datetime, datetime | None] | None:
    """Record the send (even if our lock lapsed: the mail did go out); return sent_at and the episode start."""
    statement = (
        update(Notification)
        .where(Notification.id == claimed.id, Notification.status == "pending", Notification.mailbox_id == Mailbox.id)
        .values(status="sent", sent_at=_now(), locked_until=None, last_error=None)
        .returning(Notification.sent_at, Mailbox.token_refresh_failed_at)
    )
    row = (await session.execute(statement)).one_or_none()
    return (row.sent_at, row.token_refresh_failed_at) if row else None


async def mark_failed(session: AsyncSession, claimed: ClaimedEmail, error: str) -> bool:
    """Give up on the row for good, unless another job has claimed it since."""
    return await _update_own(session, claimed, status="failed", locked_until=None, last_error=error)


async def retry_later(session: AsyncSession, claimed: ClaimedEmail, error: str, delay_seconds: float) -> bool:
    """Release the row to be swept again after `delay_seconds`, unless another job has claimed it since."""
    due = _now() + timedelta(seconds=delay_seconds)
    return await _update_own(session, claimed, next_attempt_at=due, locked_until=None, last_error=error)


async def _update_own(session: AsyncSession, claimed: ClaimedEmail, **values: Any) -> bool:
    statement = (
        update(Notification)
        .where(
            Notification.id == claimed.id,
            Notification.status == "pending",
            Notification.attempts == claimed.attempts,
        )
        .values(**values)
        .returning(Notification.id)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


def _now() -> Any:
    return sql.now()  # the database's clock: one clock for every worker's claims and locks


def _unlocked() -> Any:
    return or_(Notification.locked_until.is_(None), Notification.locked_until < _now())


async def deliver_notification(ctx: Mapping[str, Any], notification_id: int) -> str:
    """Claim, send, record: "sent", "retry", "failed", "obsolete" (a reminder for a mailbox that is back),
    or "skipped" (not due, or another job has it)."""
    runtime: Runtime = ctx["runtime"]
    settings = runtime.settings
    async with runtime.sessionmaker() as session, session.begin():
        claimed = await claim(session, notification_id, lock_seconds(settings))
    if claimed is None:
        return "skipped"
    if claimed.obsolete:
        async with runtime.sessionmaker() as session, session.begin():
            await mark_failed(session, claimed, OBSOLETE)
        _count(claimed, "obsolete", OBSOLETE, logging.INFO)
        return "obsolete"
    error = await _send(settings, claimed)
    if error is None:
        await _record_sent(runtime.sessionmaker, claimed)
        return "sent"
    return await _record_failure(runtime, claimed, error)


async def _send(settings: Settings, claimed: ClaimedEmail) -> DeliveryError | None:
    config = SmtpConfig.from_url(settings.smtp_url, settings.smtp_timeout_seconds)
    message = mailer.build_message(claimed.mail, settings.mail_from)
    deadline = send_deadline_seconds(settings)
    try:
        async with asyncio.timeout(deadline):
            await mailer.send_with_retries(config, message, settings.smtp_retry_tries, settings.smtp_retry_base_seconds)
    except DeliveryError as err:
        return err
    except TimeoutError:
        return TemporaryDeliveryError(f"timed out: no answer within {deadline:g} s")
    return None


async def _record_sent(sessionmaker: Sessionmaker, claimed: ClaimedEmail) -> None:
    async with sessionmaker() as session, session.begin():
        times = await mark_sent(session, claimed)
    _count(claimed, "sent", None, logging.INFO)
    if times is not None and claimed.kind in FAILURE_KINDS and times[1] is not None:
        FAILURE_TO_EMAIL.labels(kind=claimed.kind).observe(max((times[0] - times[1]).total_seconds(), 0.0))


async def _record_failure(runtime: Runtime, claimed: ClaimedEmail, error: DeliveryError) -> str:
    """Permanent, or out of attempts: failed for good. Otherwise back to the sweeper after a growing delay."""
    settings = runtime.settings
    permanent = isinstance(error, PermanentDeliveryError)
    if permanent or claimed.attempts >= settings.outbox_max_attempts:
        reason = str(error) if permanent else f"gave up after {claimed.attempts} attempts: {error}"
        async with runtime.sessionmaker() as session, session.begin():
            await mark_failed(session, claimed, reason)
        _count(claimed, "failed", reason, logging.ERROR)
        return "failed"
    delay = mailer.retry_delay_seconds(claimed.attempts, settings.outbox_retry_base_seconds)
    async with runtime.sessionmaker() as session, session.begin():
        await retry_later(session, claimed, str(error), delay)
    _count(claimed, "retry", f"{error}; next attempt in {delay:g} s", logging.WARNING)
    return "retry"


def _count(claimed: ClaimedEmail, result: str, error: str | None, level: int) -> None:
    EMAILS.labels(kind=claimed.kind, result=result).inc()
    extra = {"notification_id": claimed.id, "kind": claimed.kind, "attempt": claimed.attempts, "result": result}
    logger.log(level, "email %s", result, extra={**extra, "error": error})


async def sweep_outbox(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Enqueue a delivery job for every due row: new ones, retries, and rows whose worker died (jobs/sweep_ids.py)."""
    runtime: Runtime = ctx["runtime"]
    async with runtime.sessionmaker() as session:
        due = await due_notifications(session)
    stale = lock_seconds(runtime.settings)
    enqueued = 0
    for notification_id, attempts, waited in due:
        jid = sweep_job_id(job_id(notification_id, attempts), waited, stale)
        job = await ctx["redis"].enqueue_job(DELIVER_JOB, notification_id, _job_id=jid)
        enqueued += job is not None
    return {"due": len(due), "enqueued": enqueued}


functions = [func(deliver_notification, name=DELIVER_JOB, keep_result=0, max_tries=3, timeout=300)]
