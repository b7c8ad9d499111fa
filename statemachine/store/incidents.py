"""The provider-incident guard: records every cycle's outcome, opens and closes incidents, lists them.

`IncidentGuard.observe` runs inside each cycle's transaction (the `OutcomeObserver` of cycle.py), so
the outcome row, the incident and the mailbox's event commit together. An incident holds back only
the failures it is about (`incident_rules.holds`), so a provider may have one open incident per
cause. Opening races between workers are settled by the partial unique indexes (one open transient
incident per provider, one per provider and code) with ON CONFLICT DO NOTHING: the loser sees the
incident open, which is all it needs. Closing is a cron's job (`close_recovered`), which also pulls
the mailboxes it held forward with jitter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, extract, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from statemachine.core.errors import Verdict
from statemachine.core.incident_rules import (
    SUCCESS,
    TRANSIENT,
    Cause,
    CodeCount,
    IncidentThresholds,
    Opening,
    WindowCounts,
    holds,
    should_close,
    should_open,
)
from statemachine.core.states import FailureKind, State
from statemachine.providers import registry
from statemachine.store import webhooks
from statemachine.store.db import Sessionmaker
from statemachine.store.models import (
    OPEN_CODE,
    OPEN_TRANSIENT,
    Incident,
    Mailbox,
    RefreshOutcome,
    StateTransition,
    WindowCheck,
)
from statemachine.store.queries import json_row

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
OUTCOME_RETENTION = timedelta(hours=48)
PRUNE_BATCH = 10_000
OPENED_EVENT, CLOSED_EVENT = "provider_incident_opened", "provider_incident_closed"
# A window count's cost grows with its rows (80 ms for the 168,000 outcomes of 1,000,000 mailboxes on
# 1-hour tokens), and at the onset of an outage every cycle fails. After counting N rows, the fleet
# (whichever process claims the provider's `incident_window_checks` row first) counts that provider's
# window again only N / WINDOW_ROWS_PER_SECOND seconds later (1.7 s at that size), however many worker
# processes there are; a small window is counted after every failure.
WINDOW_ROWS_PER_SECOND = 100_000
# A window smaller than this is cheap to count: every failure counts it, with no claim (see _claim_count).
SMALL_WINDOW = 1_000
WINDOW_LOCK_CLASS = 0x1D0C  # the advisory lock space of window claims: (this, hashtext(provider))


@dataclass(frozen=True)
class OpenedIncident:
    id: int
    provider: str
    opening: Opening


@dataclass(frozen=True)
class Closed:
    """A closed incident and the mailboxes it held, now due again soon: (mailbox id, due)."""

    id: int
    pulled: list[tuple[int, datetime]]


def _failing(provider: str, cause: Cause, *, beyond: datetime | None = None) -> Any:
    """Mailboxes an incident about `cause` holds back: those failing with its kind (and code, for a permanent one).

    That is retrying/degraded ones, and those disconnected by transient failures (which are re-probed).
    With `beyond` (closing an outage), also those confirming a permanent error whose confirming cycle met
    the outage and now waits the longest rung: due later than `beyond`, so no confirmation comes early.
    """
    disconnected_transient = and_(
        Mailbox.state == State.DISCONNECTED.value,
        Mailbox.failure_kind == FailureKind.TRANSIENT.value,
        Mailbox.next_refresh_at.is_not(None),
    )
    same_cause = Mailbox.failure_kind == cause.kind
    if cause.kind == FailureKind.PERMANENT and cause.code is not None:
        same_cause = and_(same_cause, Mailbox.token_refresh_error.startswith(f"{cause.code}: ", autoescape=True))
    if cause.kind == FailureKind.TRANSIENT and beyond is not None:
        confirming = and_(Mailbox.failure_kind == FailureKind.PERMANENT.value, Mailbox.next_refresh_at > beyond)
        same_cause = or_(same_cause, confirming)
    return and_(
        Mailbox.provider == provider,
        same_cause,
        or_(Mailbox.state.in_([State.RETRYING.value, State.DEGRADED.value]), disconnected_transient),
    )


async def window_counts(session: AsyncSession, provider: str, since: datetime) -> WindowCounts:
    """One provider's outcomes since `since`: cycles per (kind, code), and distinct mailboxes per failing kind
    and (kind, code).

    Two aggregates in one statement: the cycles by a hash aggregate over every row, the distinct mailboxes
    over the failures only. One grouped count with distinct aggregates sorted every row of the window, the
    successes too (most of them, and spilled to disk at 1,000,000 mailboxes): 230 ms against 45 ms for
    167,000 outcomes here, and the fleet runs it once per interval at an outage's onset.
    """
    recent = (RefreshOutcome.provider == provider, RefreshOutcome.at > since)
    kind, code = RefreshOutcome.outcome, RefreshOutcome.code
    cycles = select(kind, code, func.count(), literal(0), literal(-1)).where(*recent).group_by(kind, code)
    hit = (
        select(kind, code, literal(0), func.count(RefreshOutcome.mailbox_id.distinct()), func.grouping(code))
        .where(*recent, kind != SUCCESS)
        .group_by(func.grouping_sets(kind, tuple_(kind, code)))
    )
    per_code: dict[tuple[str, str | None], int] = {}
    mailboxes: dict[tuple[str, str | None], int] = {}
    per_kind_mailboxes: dict[str, int] = {}
    for outcome, code_value, count, boxes, grouped in await session.execute(cycles.union_all(hit)):
        if grouped == -1:
            per_code[(outcome, code_value)] = count
        elif grouped == 1:
            per_kind_mailboxes[outcome] = boxes
        else:
            mailboxes[(outcome, code_value)] = boxes

    def kind_cycles(wanted: str) -> int:
        return sum(n for (outcome, _), n in per_code.items() if outcome == wanted)

    return WindowCounts(
        cycles=sum(per_code.values()),
        successes=kind_cycles(SUCCESS),
        transient_cycles=kind_cycles(TRANSIENT),
        transient_mailboxes=per_kind_mailboxes.get(TRANSIENT, 0),
        codes=tuple(
            CodeCount(outcome, code_value, n, mailboxes.get((outcome, code_value), 0))
            for (outcome, code_value), n in per_code.items()
            if outcome != SUCCESS
        ),
    )


HISTORY_COLUMNS = ["mailbox_id", "event", "from_state", "to_state", "reason", "actor", "attempt", "at"]


def _history_from(rows: Any, event: str, reason: str, at: datetime) -> Any:
    """INSERT one history row (from = to = state, actor system) per row of `rows` (id, state, attempt count)."""
    values = select(
        rows.c.id, literal(event), rows.c.state, rows.c.state, literal(reason), literal(SYSTEM_ACTOR),
        rows.c.token_refresh_attempt_count, literal(at),
    )  # fmt: skip
    return insert(StateTransition).from_select(HISTORY_COLUMNS, values)


def _failing_rows(provider: str, cause: Cause, *, update: bool, beyond: datetime | None = None) -> Any:
    """The held-back mailboxes, locked without waiting: SKIP LOCKED passes over rows a cycle holds right now.

    Never waiting is what keeps this deadlock-free next to concurrent cycles (each holds its own row
    FOR UPDATE, and a history row's foreign key needs a KEY SHARE lock on its mailbox). A skipped
    mailbox is mid-cycle: that cycle writes its own history row.
    """
    columns = (Mailbox.id, Mailbox.state, Mailbox.token_refresh_attempt_count)
    # FOR KEY SHARE (read) / FOR NO KEY UPDATE
    failing = select(*columns).where(_failing(provider, cause, beyond=beyond))
    return failing.with_for_update(key_share=True, skip_locked=True, read=not update).cte("failing")


async def _record_opened(session: AsyncSession, provider: str, cause: Cause, reason: str, at: datetime) -> None:
    await session.execute(_history_from(_failing_rows(provider, cause, update=False), OPENED_EVENT, reason, at))


async def _pull_forward(
    session: AsyncSession, provider: str, cause: Cause, now: datetime, spread_seconds: float, reason: str
) -> list[tuple[int, datetime]]:
    """Retry the held-back mailboxes soon, spread over `spread_seconds`, and record it in their history.

    Returns each pulled mailbox with its new due time, for the caller to schedule exactly.
    """
    locked = _failing_rows(provider, cause, update=True, beyond=now + timedelta(seconds=spread_seconds))
    soon = literal(now) + func.make_interval(0, 0, 0, 0, 0, 0, func.random() * spread_seconds)
    pulled = (
        update(Mailbox)
        .where(Mailbox.id == locked.c.id)
        .values(next_refresh_at=func.least(func.coalesce(Mailbox.next_refresh_at, soon), soon))
        .returning(Mailbox.id, Mailbox.state, Mailbox.token_refresh_attempt_count, Mailbox.next_refresh_at)
        .cte("pulled")
    )
    history = _history_from(pulled, CLOSED_EVENT, reason, now).cte("history")
    rows = await session.execute(select(pulled.c.id, pulled.c.next_refresh_at).add_cte(history))
    return [(mailbox_id, due) for mailbox_id, due in rows]


async def _was_big(session: AsyncSession, provider: str) -> bool:
    """Whether the provider's last recorded window was big (its claim, then, is this cycle's to update)."""
    statement = select(WindowCheck.window_cycles).where(WindowCheck.provider == provider)
    return (await session.scalar(statement) or 0) >= SMALL_WINDOW


def _spacing(window_cycles: Any) -> Any:
    """How long after counting a window of `window_cycles` rows the fleet counts it again."""
    return func.make_interval(0, 0, 0, 0, 0, 0, window_cycles / float(WINDOW_ROWS_PER_SECOND))


@dataclass(frozen=True)
class CountClaim:
    """Whether this cycle counts the provider's window; if not, in how many seconds the fleet's next count of
    a big window is due (0: no such wait known, e.g. another cycle holds a due claim)."""

    counts: bool
    due_in: float


async def _claim_count(session: AsyncSession, provider: str) -> CountClaim:
    """Whether this cycle counts the provider's window: for a big window, one cycle per interval in the fleet.

    The claim is one conditional UPDATE that matches nothing while the next count is not due (nearly
    every failure at an outage's onset). When it is due, the claimer also takes a transaction-scoped
    advisory try-lock, so cycles that find it due at the same moment pass over it rather than queue
    behind a count of several hundred milliseconds (that queue starved the pool at 1,000,000
    mailboxes). The claim commits with the cycle: a cycle rolled back leaves the count due. A small
    window is counted by every failure without touching the row (a lock would serialize them); the
    provider's first failure creates its row.
    """
    lock = func.pg_try_advisory_xact_lock(WINDOW_LOCK_CLASS, func.hashtext(WindowCheck.provider))
    big = and_(WindowCheck.provider == provider, WindowCheck.window_cycles >= SMALL_WINDOW)
    claimed = (
        update(WindowCheck)
        .where(big, WindowCheck.next_count_at <= func.clock_timestamp(), lock)
        .values(next_count_at=func.clock_timestamp() + _spacing(WindowCheck.window_cycles))
        .returning(WindowCheck.provider)
        .cte("claimed")
    )
    small = select(WindowCheck.provider).where(
        WindowCheck.provider == provider, WindowCheck.window_cycles < SMALL_WINDOW
    )
    known = select(WindowCheck.provider).where(WindowCheck.provider == provider).exists()
    first = select(literal(provider), func.clock_timestamp(), literal(0)).where(~known)
    created = (
        insert(WindowCheck)
        .from_select(["provider", "next_count_at", "window_cycles"], first)
        .on_conflict_do_nothing()
        .returning(WindowCheck.provider)
        .cte("created")
    )
    either = select(claimed.c.provider).union_all(select(created.c.provider), small)
    # read from the statement's snapshot, before the claim's update: when the next count is due
    due_in = select(extract("epoch", WindowCheck.next_count_at - func.clock_timestamp())).where(big).scalar_subquery()
    counts, seconds = (await session.execute(select(either.exists(), func.coalesce(due_in, 0)))).one()
    return CountClaim(bool(counts), max(0.0, float(seconds)))


@dataclass
class IncidentGuard:
    """The cycle's `OutcomeObserver`; `listeners` hear of every incident this process opens (metrics)."""

    rules: IncidentThresholds
    listeners: list[Callable[[OpenedIncident], None]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic  # this process's clock for the waits below
    # per provider: until when (self.clock) the fleet's next count of its big window is not due
    _not_due_until: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    async def observe(
        self, session: AsyncSession, *, provider: str, mailbox_id: int, verdict: Verdict | None, at: datetime
    ) -> bool:
        """Record the outcome; return True when an open incident holds this failure back (opening one if due)."""
        outcome = SUCCESS if verdict is None else verdict.kind.value
        code = None if verdict is None else verdict.code
        values = {"provider": provider, "mailbox_id": mailbox_id, "outcome": outcome, "code": code, "at": at}
        open_count = select(func.count()).where(Incident.provider == provider, Incident.status == "open")
        # one round trip per cycle for the common case: record the outcome and read whether an incident is open
        any_open = await session.scalar(insert(RefreshOutcome).values(**values).returning(open_count.scalar_subquery()))
        if verdict is None:
            return False
        already = await open_causes(session, provider) if any_open else frozenset()
        if any(holds(cause, verdict.kind.value, verdict.code) for cause in already):
            return True
        counts = await self._window(session, provider, at)
        if counts is None:
            return False
        spec = registry.find(provider)
        secret_setting = spec.client_secret_env if spec else None
        opening = should_open(provider, counts, self.rules, already, secret_setting=secret_setting)
        if opening is None:
            return False
        await self._open(session, provider, opening, at)
        return holds(opening.about, verdict.kind.value, verdict.code)

    async def _window(self, session: AsyncSession, provider: str, at: datetime) -> WindowCounts | None:
        """The provider's window, or None while the fleet's last count of it is too recent for its size.

        A failure that finds the next count not yet due learns when it will be, and this process's failures
        skip the claim until then: the claim is a statement, and at an outage's onset nearly every cycle fails,
        so the guard's cost would grow with the failure rate. With the wait known, it is about one claim per
        process per interval, and the count is claimed as soon as it is due, as before.
        """
        if self.clock() < self._not_due_until.get(provider, float("-inf")):
            return None
        claim = await _claim_count(session, provider)
        if not claim.counts:
            if claim.due_in > 0:
                self._not_due_until[provider] = self.clock() + claim.due_in
            return None
        counts = await window_counts(session, provider, at - timedelta(seconds=self.rules.window_seconds))
        if counts.cycles >= SMALL_WINDOW or await _was_big(session, provider):
            spacing = _spacing(literal(counts.cycles))
            await session.execute(
                update(WindowCheck)
                .where(WindowCheck.provider == provider)
                .values(window_cycles=counts.cycles, next_count_at=func.clock_timestamp() + spacing)
            )
        return counts

    async def _open(self, session: AsyncSession, provider: str, opening: Opening, at: datetime) -> None:
        statement = insert(Incident).values(
            provider=provider,
            kind=opening.kind,
            cause=opening.cause,
            code=opening.code,
            failure_ratio=opening.failure_ratio,
            mailboxes_affected=opening.mailboxes,
            opened_at=at,
        )
        # the conflict target is the cause's partial unique index (models.Incident)
        target: list[InstrumentedAttribute[Any]]
        if opening.code is None:
            target, where = [Incident.provider], OPEN_TRANSIENT
        else:
            target, where = [Incident.provider, Incident.code], OPEN_CODE
        returning = statement.on_conflict_do_nothing(index_elements=target, index_where=where).returning(Incident.id)
        incident_id = await session.scalar(returning)
        if incident_id is None:
            return  # another cycle opened it first; it wrote the rows and raised the alert
        reason = f"Provider incident opened: {opening.cause}. These failures are not escalated and cause no email."
        await _record_opened(session, provider, opening.about, reason, at)
        await webhooks.queue_incident(
            session, incident_id=incident_id, provider=provider, cause=opening.cause, code=opening.code, opened_at=at
        )
        logger.error(
            "provider incident opened",
            extra={"incident_id": incident_id, "provider": provider, "cause": opening.cause, "code": opening.code,
                   "failure_ratio": round(opening.failure_ratio, 3), "mailboxes_affected": opening.mailboxes},
        )  # fmt: skip
        for listener in self.listeners:
            listener(OpenedIncident(incident_id, provider, opening))


async def open_causes(session: AsyncSession, provider: str) -> frozenset[Cause]:
    """What the provider's open incidents are about."""
    statement = select(Incident.kind, Incident.code).where(Incident.provider == provider, Incident.status == "open")
    return frozenset(Cause(kind, code) for kind, code in await session.execute(statement))


async def close_recovered(sessionmaker: Sessionmaker, rules: IncidentThresholds, now: datetime) -> list[Closed]:
    """Close every open incident whose cause has passed; return them with the mailboxes they held."""
    async with sessionmaker() as session:
        candidates = (await session.execute(select(Incident.id).where(Incident.status == "open"))).scalars().all()
    closed = []
    for incident_id in candidates:
        async with sessionmaker() as session, session.begin():
            pulled = await _close_if_recovered(session, incident_id, rules, now)
        if pulled is not None:
            closed.append(Closed(incident_id, pulled))
    return closed


async def _close_if_recovered(
    session: AsyncSession, incident_id: int, rules: IncidentThresholds, now: datetime
) -> list[tuple[int, datetime]] | None:
    statement = select(Incident).where(Incident.id == incident_id, Incident.status == "open")
    incident = (await session.execute(statement.with_for_update(skip_locked=True))).scalar_one_or_none()
    if incident is None:
        return None
    cause = Cause(incident.kind, incident.code)
    counts = await window_counts(session, incident.provider, now - timedelta(seconds=rules.window_seconds))
    if not should_close(counts, rules, cause):
        return None
    incident.status, incident.closed_at = "closed", now
    await webhooks.queue_incident(
        session, incident_id=incident.id, provider=incident.provider, cause=incident.cause, code=incident.code,
        opened_at=incident.opened_at, closed_at=now,
    )  # fmt: skip
    reason = "Provider incident closed: the provider answers again; retrying soon."
    pulled = await _pull_forward(session, incident.provider, cause, now, rules.recovery_spread_seconds, reason)
    logger.warning(
        "provider incident closed",
        extra={"incident_id": incident.id, "provider": incident.provider, "cause": incident.cause,
               "open_seconds": round((now - incident.opened_at).total_seconds(), 1)},
    )  # fmt: skip
    return pulled


async def prune_outcomes(sessionmaker: Sessionmaker, now: datetime) -> int:
    """Delete outcome rows older than the retention, in batches so no transaction grows large."""
    cutoff, total = now - OUTCOME_RETENTION, 0
    while True:
        batch = select(RefreshOutcome.id).where(RefreshOutcome.at < cutoff).limit(PRUNE_BATCH)
        async with sessionmaker() as session, session.begin():
            result = await session.execute(delete(RefreshOutcome).where(RefreshOutcome.id.in_(batch)))
            deleted = cast(CursorResult[Any], result).rowcount  # a DELETE's result is a cursor result
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


INCIDENT_COLUMNS = (
    Incident.id,
    Incident.provider,
    Incident.status,
    Incident.cause,
    Incident.code,
    Incident.failure_ratio,
    Incident.mailboxes_affected,
    Incident.opened_at,
    Incident.closed_at,
)


async def list_incidents(session: AsyncSession, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first, JSON-ready (the `tokenwarden incidents --json` contract)."""
    statement = select(*INCIDENT_COLUMNS).order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit)
    return [json_row(row) for row in await session.execute(statement)]


async def open_counts(session: AsyncSession) -> dict[str, int]:
    """Open incidents per provider, for the gauge."""
    statement = select(Incident.provider, func.count()).where(Incident.status == "open").group_by(Incident.provider)
    return {provider: count for provider, count in await session.execute(statement)}
