"""Removing a mailbox for the host app, and revoking its grant at the provider through an outbox.

Removal is one transaction: the `removed` event (disconnected for good: no schedule, reminder or
email; a `mailbox.removed` webhook), `removed_at`, the token columns erased and the lease dropped (so
a cycle in flight can store nothing), and — for a provider that can revoke a grant — the encrypted
refresh token moved to a `revocations` row. The revocation is tried at once and then by the worker
until it works or a day has passed; the token is erased from that row either way.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.machine import Occurrence
from statemachine.core.secrets import TokenCipher
from statemachine.core.states import Event
from statemachine.mail.emails import provider_display_name
from statemachine.providers.revocation import revoke_token
from statemachine.services.settings import Settings
from statemachine.services.unit_of_work import EventContext, apply_event
from statemachine.store import repository
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox, Revocation, StateTransition

logger = logging.getLogger(__name__)

RETRY_WINDOW = timedelta(days=1)
MAX_DELAY_SECONDS = 3600.0
LOCK_SECONDS = 120.0
ACTOR = "tokenwarden"


def revoke_urls(settings: Settings) -> dict[str, str]:
    """The providers that can revoke one grant, and where (one without, like Microsoft: tokens are only erased)."""
    return {name: client.revoke_url for name, client in settings.providers.items() if client.revoke_url}


async def remove_mailbox(
    sessionmaker: Sessionmaker, events: EventContext, urls: Mapping[str, str], mailbox_id: int, *, actor: str,
    now: datetime,
) -> int | None:  # fmt: skip
    """Remove the mailbox; return the id of its revocation row (None: already removed, or nothing to revoke)."""
    async with sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, mailbox_id)
        if mailbox.removed_at is not None:
            return None
        revocable = mailbox.provider in urls
        note = None if revocable else (
            f"Removed by the host app. {provider_display_name(mailbox.provider)} has no per-grant revocation "
            "endpoint: the tokens were erased here, but the grant could not be revoked at the provider."
        )  # fmt: skip
        revocation = Revocation(
            mailbox_id=mailbox.id, provider=mailbox.provider, token_ciphertext=mailbox.refresh_token_ciphertext,
            give_up_at=now + RETRY_WINDOW,
        )  # fmt: skip
        if revocable:
            session.add(revocation)
        await apply_event(session, mailbox, Event.REMOVED, Occurrence(at=now, actor=actor, note=note), events)
        mailbox.removed_at = now
        mailbox.refresh_token_ciphertext = b""  # erased (the column is NOT NULL)
        mailbox.access_token_ciphertext = mailbox.access_token_expires_at = None
        mailbox.lease_owner = mailbox.lease_until = None
        await session.flush()
        return revocation.id if revocable else None


@dataclass(frozen=True)
class _Claim:
    id: int
    mailbox_id: int
    provider: str
    token_ciphertext: bytes | None  # never None while pending (a CHECK constraint)
    attempts: int
    give_up_at: datetime


async def due_revocations(session: AsyncSession, limit: int = 100) -> list[int]:
    statement = select(Revocation.id).where(*_due()).order_by(Revocation.next_attempt_at).limit(limit)
    return list((await session.scalars(statement)).all())


def _due() -> tuple[Any, ...]:
    unlocked = or_(Revocation.locked_until.is_(None), Revocation.locked_until < func.now())
    return Revocation.status == "pending", Revocation.next_attempt_at <= func.now(), unlocked


async def _claim(session: AsyncSession, revocation_id: int) -> _Claim | None:
    statement = (
        update(Revocation)
        .where(Revocation.id == revocation_id, *_due())
        .values(locked_until=func.now() + timedelta(seconds=LOCK_SECONDS), attempts=Revocation.attempts + 1)
        .returning(Revocation.id, Revocation.mailbox_id, Revocation.provider, Revocation.token_ciphertext,
                   Revocation.attempts, Revocation.give_up_at)
    )  # fmt: skip
    row = (await session.execute(statement)).one_or_none()
    return _Claim(*row) if row is not None else None


async def attempt_revocation(
    sessionmaker: Sessionmaker, http: httpx.AsyncClient, cipher: TokenCipher, settings: Settings, revocation_id: int,
    now: datetime,
) -> str:  # fmt: skip
    """One try: "revoked", "retry", "failed" (given up after the window) or "skipped" (not due, or taken)."""
    async with sessionmaker() as session, session.begin():
        claimed = await _claim(session, revocation_id)
    if claimed is None:
        return "skipped"
    url = revoke_urls(settings).get(claimed.provider)
    assert claimed.token_ciphertext is not None
    token = cipher.decrypt(claimed.token_ciphertext, mailbox_id=claimed.mailbox_id, role="refresh")
    error = await revoke_token(http, url, token) if url else "no revocation endpoint is configured"
    name = provider_display_name(claimed.provider)
    async with sessionmaker() as session, session.begin():
        if error is None:
            result = "revoked"
            await _finish(session, claimed, "revoked", None, "grant_revoked", f"The grant was revoked at {name}.", now)
        elif now >= claimed.give_up_at:
            result = "failed"
            reason = (f"The grant could not be revoked at {name} ({error}); gave up after {claimed.attempts} tries. "
                      "The tokens are erased here.")  # fmt: skip
            await _finish(session, claimed, "failed", error, "revocation_failed", reason, now)
        else:
            result = "retry"
            step: float = settings.outbox_retry_base_seconds * 2.0 ** (claimed.attempts - 1)
            delay = min(MAX_DELAY_SECONDS, step) * (0.5 + random.random() / 2)
            values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error, "locked_until": None}
            await session.execute(update(Revocation).where(Revocation.id == claimed.id).values(**values))
    logger.log(logging.INFO if error is None else logging.WARNING, "grant revocation %s", result,
               extra={"revocation_id": claimed.id, "mailbox_id": claimed.mailbox_id, "error": error})  # fmt: skip
    return result


async def _finish(
    session: AsyncSession, claimed: _Claim, status: str, error: str | None, event: str, reason: str, now: datetime
) -> None:
    """Erase the token, close the row and say so in the mailbox's history."""
    values = {"status": status, "token_ciphertext": None, "last_error": error, "done_at": now, "locked_until": None}
    await session.execute(update(Revocation).where(Revocation.id == claimed.id).values(**values))
    state = await session.scalar(select(Mailbox.state).where(Mailbox.id == claimed.mailbox_id))
    assert state is not None
    session.add(StateTransition(mailbox_id=claimed.mailbox_id, event=event, from_state=state, to_state=state,
                                reason=reason, actor=ACTOR, at=now))  # fmt: skip


async def rotate_revocation_keys(session: AsyncSession, cipher: TokenCipher) -> int:
    """Re-encrypt the tokens still waiting in the revocation outbox under the newest key."""
    rows = (await session.scalars(select(Revocation).where(Revocation.token_ciphertext.is_not(None)))).all()
    for row in rows:
        assert row.token_ciphertext is not None
        row.token_ciphertext = cipher.rotate(row.token_ciphertext)
    return len(rows)
