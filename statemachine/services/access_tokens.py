"""On-demand access tokens for host apps: the stored one while it lasts, else the worker's own cycle, now.

Concurrent callers for one mailbox share one cycle, across processes, through the lease: a caller runs
`run_cycle` only at the row revision it read, so one that finds the lease held, or the row changed
since, calls no provider; it waits for the lease to be released and reads the outcome. A failing
mailbox is never refreshed before its `next_refresh_at`, so no caller can hammer the provider.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.secrets import TokenCipher, TokenDecryptionError
from statemachine.core.states import State
from statemachine.services.cycle import CycleDeps, run_cycle
from statemachine.store import repository
from statemachine.store.models import Mailbox, StateTransition
from statemachine.store.repository import UnknownMailboxError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
MAX_RETRY_AFTER_SECONDS = 3600


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: datetime | None
    cycle_ran: bool
    scope: str | None = None  # as the provider last named it


class MailboxDisconnectedError(Exception):
    """The mailbox is disconnected: only its user can fix it, by reconnecting."""

    def __init__(self, mailbox_id: int) -> None:
        super().__init__(f"mailbox {mailbox_id} is disconnected")
        self.mailbox_id = mailbox_id


class RefreshUnavailableError(Exception):
    """No token valid long enough can be had now; worth asking again in `retry_after` seconds."""

    def __init__(self, mailbox_id: int, retry_after: float) -> None:
        super().__init__(f"no valid access token for mailbox {mailbox_id} right now")
        self.retry_after = max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(retry_after)))


@dataclass(frozen=True)
class _Row:
    state: str
    revision: int
    ciphertext: bytes | None
    expires_at: datetime | None
    next_refresh_at: datetime | None
    lease_until: datetime | None
    scope: str | None


async def _read_in(session: AsyncSession, mailbox_id: int) -> _Row:
    columns = (Mailbox.state, Mailbox.revision, Mailbox.access_token_ciphertext, Mailbox.access_token_expires_at,
               Mailbox.next_refresh_at, Mailbox.lease_until, Mailbox.granted_scope)  # fmt: skip
    row = (await session.execute(select(*columns).where(Mailbox.id == mailbox_id))).one_or_none()
    if row is None:
        raise UnknownMailboxError(mailbox_id)
    return _Row(*row)


async def _read(deps: CycleDeps, mailbox_id: int) -> _Row:
    async with deps.sessionmaker() as session:
        return await _read_in(session, mailbox_id)


async def stored_token(
    session: AsyncSession, cipher: TokenCipher, mailbox_id: int, *, min_valid_seconds: float, now: datetime
) -> IssuedToken | None:
    """The common case inside the caller's transaction: the stored token when it lasts long enough, else None
    (then `access_token` decides). Raises UnknownMailboxError or MailboxDisconnectedError."""
    row = await _read_in(session, mailbox_id)
    if row.state == State.DISCONNECTED:
        raise MailboxDisconnectedError(mailbox_id)
    return _issue(cipher, mailbox_id, row, False) if _seconds_left(row, now) >= min_valid_seconds else None


def _seconds_left(row: _Row, now: datetime) -> float:
    if row.ciphertext is None or row.expires_at is None:
        return 0.0
    return (row.expires_at - now).total_seconds()


async def access_token(
    deps: CycleDeps, mailbox_id: int, *, min_valid_seconds: float, actor: str, wait_seconds: float
) -> IssuedToken:
    """A token valid for `min_valid_seconds`, or, when none can be had now, a still-valid one or an error.

    Raises UnknownMailboxError, MailboxDisconnectedError or RefreshUnavailableError.
    """
    deadline = time.monotonic() + wait_seconds
    cycle_ran = False
    while True:
        row = await _read(deps, mailbox_id)
        now = deps.clock()
        if row.state == State.DISCONNECTED:
            raise MailboxDisconnectedError(mailbox_id)
        left = _seconds_left(row, now)
        if left >= min_valid_seconds and (issued := _issue(deps.cipher, mailbox_id, row, cycle_ran)) is not None:
            return issued
        if row.lease_until is not None and row.lease_until > now:
            if time.monotonic() >= deadline:  # the cycle holding the lease takes too long
                return _best_effort(deps, mailbox_id, row, cycle_ran, (row.lease_until - now).total_seconds())
            await asyncio.sleep(POLL_SECONDS)
            continue
        failing_until = row.next_refresh_at if row.state != State.HEALTHY else None
        if failing_until is not None and failing_until > now:
            return _best_effort(deps, mailbox_id, row, cycle_ran, (failing_until - now).total_seconds())
        if cycle_ran or time.monotonic() >= deadline:  # a cycle ran and still gave nothing that lasts long enough
            return _best_effort(deps, mailbox_id, row, cycle_ran, deps.events.policy.cycle_delays_seconds[0])
        result = await run_cycle(deps, mailbox_id, actor=actor, revision=row.revision)
        cycle_ran = result.status in ("refreshed", "failed")


def _best_effort(deps: CycleDeps, mailbox_id: int, row: _Row, cycle_ran: bool, retry_after: float) -> IssuedToken:
    """The stored token while it is still valid at all (the caller asked for more), else 'try again later'."""
    still_valid = row.ciphertext is not None and (row.expires_at is None or row.expires_at > deps.clock())
    if still_valid and (issued := _issue(deps.cipher, mailbox_id, row, cycle_ran)) is not None:
        return issued
    raise RefreshUnavailableError(mailbox_id, retry_after)


def _issue(cipher: TokenCipher, mailbox_id: int, row: _Row, cycle_ran: bool) -> IssuedToken | None:
    assert row.ciphertext is not None
    token = open_access_token(cipher, mailbox_id, row.ciphertext)
    return None if token is None else IssuedToken(token, row.expires_at, cycle_ran, row.scope)


def open_access_token(cipher: TokenCipher, mailbox_id: int, ciphertext: bytes) -> str | None:
    """The stored access token in clear; None when no key of TOKENWARDEN_ENCRYPTION_KEYS opens it.

    Such a token counts as no token: the caller refreshes, and the cycle stores one the current key opens
    (or fails as a config error, `token_undecryptable`, when the refresh token is unreadable too). A host
    app gets a token or a 503, never a 500 for our keys.
    """
    try:
        return cipher.decrypt(ciphertext, mailbox_id=mailbox_id, role="access")
    except TokenDecryptionError:
        logger.warning("no key opens a stored access token; refreshing instead", extra={"mailbox_id": mailbox_id})
        return None


AUTH_FAILURE_EVENT = "auth_failure_reported"
MAX_DETAIL_LENGTH = 200


async def record_auth_failure(
    deps: CycleDeps, mailbox_id: int, *, actor: str, status: int, detail: str, min_interval_seconds: float
) -> bool:
    """The host app's provider call was refused with a token we issued: note it, stop handing that token out.

    One transaction, at most once per `min_interval_seconds` per mailbox (a report inside it changes
    nothing): a history row (actor = the key) and the stored access token marked expired, so the next
    access-token request refreshes. Returns whether a refresh cycle may run now: not for a report
    inside the interval, a disconnected mailbox, nor a failing one before its `next_refresh_at`.
    """
    async with deps.sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, mailbox_id)
        now = deps.clock()
        last = mailbox.auth_failure_reported_at
        if last is not None and (now - last).total_seconds() < min_interval_seconds:
            return False
        mailbox.auth_failure_reported_at = now
        detail = _without_token(deps, mailbox, " ".join(detail.split())[:MAX_DETAIL_LENGTH])
        reason = f"The host app reported HTTP {status} from the provider for the access token it was given"
        session.add(
            StateTransition(
                mailbox_id=mailbox_id, event=AUTH_FAILURE_EVENT, from_state=mailbox.state, to_state=mailbox.state,
                reason=f"{reason}: {detail}" if detail else f"{reason}.", actor=actor, at=now,
            )
        )  # fmt: skip
        if mailbox.access_token_expires_at is None or mailbox.access_token_expires_at > now:
            mailbox.access_token_expires_at = now
        if mailbox.state == State.DISCONNECTED:
            return False
        return mailbox.state == State.HEALTHY or mailbox.next_refresh_at is None or mailbox.next_refresh_at <= now


def _without_token(deps: CycleDeps, mailbox: Mailbox, detail: str) -> str:
    """The host's words with our access token cut out, should it have pasted the provider's echo of it."""
    if mailbox.access_token_ciphertext is None or not detail:
        return detail
    try:
        token = deps.cipher.decrypt(mailbox.access_token_ciphertext, mailbox_id=mailbox.id, role="access")
    except TokenDecryptionError:
        return detail
    return detail.replace(token, "[access token]") if token else detail
