"""One refresh cycle of one mailbox: the code path shared by `tokenwarden refresh` and the worker.

1. Lease the mailbox (one statement), so no other cycle refreshes it meanwhile.
2. Call the provider outside any transaction (retries of transient failures happen in there).
3. A rotated refresh token (Microsoft: every refresh) is committed at once, in its own one-row statement.
4. The outcome. A routine refresh (a healthy mailbox's success: no history, email or webhook) is one
   compare-and-set statement on the row as leased (store/cycle_rows.py). Anything else, or a row that
   changed since the lease, takes one transaction: lock the row, re-check that nothing else changed it
   since the lease (a reconnect or an operator's action wins over a stale outcome), fire the event, write
   the row (and the account the id_token names, if none is known yet), history and outbox, release the
   lease. Commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from asyncpg import InterfaceError, InternalClientError, PostgresError
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.access_tokens import seal_access_token
from statemachine.core.errors import OAuthError, Verdict
from statemachine.core.machine import Occurrence, fire
from statemachine.core.secrets import TokenCipher, TokenDecryptionError
from statemachine.core.states import Event, FailureKind
from statemachine.services import metrics
from statemachine.services.unit_of_work import EventContext, Outcome, apply_event, outcome_of
from statemachine.store import cycle_rows, repository
from statemachine.store.cycle_rows import Lease, RoutineRefresh, SharedStatements
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox
from statemachine.store.statements import StatementPool

logger = logging.getLogger(__name__)

ROTATED_TOKEN_FIRST_WAIT, ROTATED_TOKEN_MAX_WAIT = 0.25, 4.0
# What a lost database raises: a failed statement or server error, a socket error, and, for a connection the server
# cut while it sat idle in the pool (it can look open until used), asyncpg's interface or internal client error
# ("cannot switch to state 11; another operation is in progress", seen once in CI). The pool terminates a connection
# whose use failed, so the next attempt opens a fresh one.
DATABASE_ERRORS = (PostgresError, OSError, InterfaceError, InternalClientError)

EVENT_FOR_KIND = {
    FailureKind.TRANSIENT: Event.REFRESH_FAILED_TRANSIENT,
    FailureKind.PERMANENT: Event.REFRESH_FAILED_PERMANENT,
    FailureKind.CONFIG: Event.REFRESH_FAILED_CONFIG,
}


class Grant(Protocol):
    """What a cycle reads of a refresh answer (read-only: the adapter's TokenGrant is frozen)."""

    @property
    def access_token(self) -> str: ...
    @property
    def expires_in(self) -> int | None: ...
    @property
    def refresh_token(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...  # from the refresh answer's id_token, if it had one
    @property
    def scope(self) -> str | None: ...  # None: the answer did not name it (the stored one stands)


class TokenRefresher(Protocol):
    async def refresh(self, refresh_token: str, *, account_known: bool = False) -> Grant:
        """`account_known`: the mailbox names its account already, so the answer's id_token need not be read (the
        grant's subject may then be None; a cycle never replaces a known account)."""
        ...


class OutcomeObserver(Protocol):
    """The provider-incident guard's view of every cycle, called inside the cycle's transaction.

    A routine refresh does not call it: its own statement appends the success row `observe` would
    (store/cycle_rows.py), and a success is never held back.
    """

    async def observe(
        self, session: AsyncSession, *, provider: str, mailbox_id: int, verdict: Verdict | None, at: datetime
    ) -> bool:
        """Record one cycle's outcome; return True when an open provider incident holds this failure back."""
        ...


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CycleDeps:
    """Everything a cycle needs; built once per process (the worker's ctx, the CLI's main)."""

    sessionmaker: Sessionmaker
    statements: StatementPool  # plain asyncpg connections for a cycle's own statements
    shared: SharedStatements  # takeovers of scan claims and routine writes, sent together per loop turn
    providers: Mapping[str, TokenRefresher]
    cipher: TokenCipher
    events: EventContext
    lease_seconds: float
    observer: OutcomeObserver | None = None
    clock: Callable[[], datetime] = utcnow
    jitter: Callable[[], float] = random.random


@dataclass(frozen=True)
class CycleResult:
    """`status` is refreshed, failed, busy (another cycle holds the lease) or stale (outcome dropped)."""

    mailbox_id: int
    status: str
    outcome: Outcome | None = None
    verdict: Verdict | None = None
    seconds: float = 0.0
    provider: str | None = None


async def run_cycle(
    deps: CycleDeps, mailbox_id: int, *, actor: str, claim: uuid.UUID | None = None, revision: int | None = None
) -> CycleResult:
    """Run one refresh cycle; raise UnknownMailboxError for an id that does not exist.

    `claim` is the due-scan's lease on the mailbox: a worker job takes the mailbox over only from it
    (status "busy" when that claim is finished or taken); without it (the CLI, the API) a mailbox no live
    lease holds is leased. `revision` (the API, without a claim): run only if the row is still at that
    revision, else "busy" with no provider call.
    """
    started = time.perf_counter()
    now = deps.clock()
    owner, until = uuid.uuid4(), now + timedelta(seconds=deps.lease_seconds)
    if claim is None:
        lease = await cycle_rows.take_lease(deps.statements, mailbox_id, owner, now, until, revision=revision)
    else:
        lease = await deps.shared.take_over(mailbox_id, claim, owner, until)
    if lease is None:
        return CycleResult(mailbox_id, "busy")
    grant, verdict = await _call_provider(deps, lease)
    if grant is not None and grant.refresh_token:
        await _keep_rotated_token(deps, lease, grant.refresh_token)
    result = await _apply_outcome(deps, lease, grant, verdict, actor)
    seconds = time.perf_counter() - started
    _log_cycle(result, lease.provider, seconds)
    counted = CycleResult(result.mailbox_id, result.status, result.outcome, result.verdict, seconds, lease.provider)
    metrics.record_cycle(counted, lease.provider)
    return counted


async def _call_provider(deps: CycleDeps, lease: Lease) -> tuple[Grant | None, Verdict | None]:
    try:
        refresh_token = deps.cipher.decrypt(lease.refresh_token_ciphertext, mailbox_id=lease.mailbox_id, role="refresh")
    except TokenDecryptionError as err:
        return None, Verdict(FailureKind.CONFIG, "token_undecryptable", f"{err}; check TOKENWARDEN_ENCRYPTION_KEYS.")
    provider = deps.providers.get(lease.provider)
    if provider is None:
        return None, Verdict(
            FailureKind.CONFIG, "provider_not_configured", f"No {lease.provider} client is configured."
        )
    try:
        return await provider.refresh(refresh_token, account_known=lease.account_known), None
    except OAuthError as err:
        return None, err.verdict


async def _keep_rotated_token(deps: CycleDeps, lease: Lease, refresh_token: str) -> None:
    """Commit the new refresh token, retrying a lost database for up to half the lease.

    The old token is dead at a rotating provider the moment it answered: a commit lost to a connection the
    database cut (the pool replaces closed ones when acquired, but not one cut mid-statement) or to a
    restart in progress would lose the mailbox, and a provider with replay detection revokes the grant.
    Half the lease: after that another cycle may take the mailbox, and the commit would be refused anyway.
    """
    ciphertext = deps.cipher.encrypt(refresh_token, mailbox_id=lease.mailbox_id, role="refresh")
    deadline, wait = time.monotonic() + deps.lease_seconds / 2, ROTATED_TOKEN_FIRST_WAIT
    while True:
        try:
            # one UPDATE, committed the moment it runs
            await cycle_rows.store_rotated_refresh_token(deps.statements, lease, ciphertext)
            return
        except DATABASE_ERRORS as err:
            if not _database_lost(err) or time.monotonic() + wait > deadline:
                raise
            logger.warning("keeping a rotated refresh token: the database is unreachable; retrying in %.2f s", wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, ROTATED_TOKEN_MAX_WAIT)


def _database_lost(err: Exception) -> bool:
    """A dropped connection, or a server restarting (SQLSTATE class 08, 57P0x), not a failed statement."""
    if not isinstance(err, PostgresError):
        return True  # OSError: the connection could not even be made, or broke; or a connection found cut
    return str(err.sqlstate or "").startswith(("08", "57P"))


async def _apply_outcome(
    deps: CycleDeps, lease: Lease, grant: Grant | None, verdict: Verdict | None, actor: str
) -> CycleResult:
    if grant is not None and (routine := await _apply_routine_refresh(deps, lease, grant, actor)) is not None:
        return routine
    async with deps.sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, lease.mailbox_id)
        if mailbox.revision != lease.revision:
            _release(mailbox, lease)
            return CycleResult(mailbox.id, "stale", verdict=verdict)
        now = deps.clock()
        held = await _observe(deps, session, mailbox, verdict, now)
        occurrence = Occurrence(
            at=now,
            actor=actor,
            verdict=verdict,
            expires_in=grant.expires_in if grant else None,
            incident=held,
            jitter=deps.jitter(),
        )
        if grant is not None:
            _store_access_token(deps.cipher, mailbox, grant, now)
            # a mailbox added by the CLI or an import learns its account here, for the reconnect check
            mailbox.provider_subject = mailbox.provider_subject or grant.subject
        event = Event.REFRESH_SUCCEEDED if verdict is None else EVENT_FOR_KIND[verdict.kind]
        outcome = await apply_event(session, mailbox, event, occurrence, deps.events)
        _release(mailbox, lease)
    return CycleResult(mailbox.id, "refreshed" if verdict is None else "failed", outcome, verdict)


async def _apply_routine_refresh(deps: CycleDeps, lease: Lease, grant: Grant, actor: str) -> CycleResult | None:
    """A success that writes no history, email or webhook, in one statement; None when it is not one, or when
    the row changed since the lease (the locking transaction then decides on the row as it is)."""
    now = deps.clock()
    lifecycle = lease.lifecycle()
    from_state = lifecycle.state
    occurrence = Occurrence(at=now, actor=actor, expires_in=grant.expires_in, jitter=deps.jitter())
    fire(lifecycle, Event.REFRESH_SUCCEEDED, occurrence, deps.events.policy)
    if lifecycle.records or lifecycle.emails or lifecycle.state != from_state:
        return None
    sealed = seal_access_token(deps.cipher, lease.mailbox_id, grant.access_token, grant.expires_in, now)
    refresh = RoutineRefresh(sealed, grant.subject, grant.scope, now)
    written = await deps.shared.write_routine(lease, lifecycle, refresh, record_outcome=deps.observer is not None)
    if not written:
        return None
    outcome = outcome_of(lease.mailbox_id, Event.REFRESH_SUCCEEDED, from_state, lifecycle)
    return CycleResult(lease.mailbox_id, "refreshed", outcome)


async def _observe(
    deps: CycleDeps, session: AsyncSession, mailbox: Mailbox, verdict: Verdict | None, now: datetime
) -> bool:
    if deps.observer is None:
        return False
    return await deps.observer.observe(
        session, provider=mailbox.provider, mailbox_id=mailbox.id, verdict=verdict, at=now
    )


def _store_access_token(cipher: TokenCipher, mailbox: Mailbox, grant: Grant, now: datetime) -> None:
    sealed = seal_access_token(cipher, mailbox.id, grant.access_token, grant.expires_in, now)
    mailbox.access_token_ciphertext, mailbox.access_token_expires_at = sealed
    mailbox.last_refreshed_at = now
    mailbox.granted_scope = grant.scope or mailbox.granted_scope


def _release(mailbox: Mailbox, lease: Lease) -> None:
    if mailbox.lease_owner == lease.owner:
        mailbox.lease_owner = None
        mailbox.lease_until = None


def _log_cycle(result: CycleResult, provider: str, seconds: float) -> None:
    """INFO for every cycle but a routine refresh (a new access token and nothing else), which is most of a fleet's
    cycles: its line is DEBUG, and the worker's one line per job names its mailbox (jobs/refresh.py)."""
    outcome = result.outcome
    routine = result.status == "refreshed" and outcome is not None and not outcome.records
    level = logging.DEBUG if routine else logging.INFO
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "refresh cycle",
        extra={
            "mailbox_id": result.mailbox_id,
            "provider": provider,
            "outcome": result.status,
            "reason": result.verdict.code if result.verdict else None,
            "from_state": outcome.from_state if outcome else None,
            "to_state": outcome.to_state if outcome else None,
            "attempt": outcome.attempt if outcome else None,
            "duration_ms": round(seconds * 1000, 1),
        },
    )
