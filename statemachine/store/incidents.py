"""The provider-incident guard: records every cycle's outcome, opens and closes incidents, lists them.

`IncidentGuard.observe` runs inside each cycle's transaction (the `OutcomeObserver` of cycle.py), so
the outcome row, the incident and the mailbox's event commit together. Opening races between
workers are settled by the partial unique index (one open incident per provider) with ON CONFLICT
DO NOTHING: the loser sees an incident open, which is all it needs. Closing is a cron's job
(`close_recovered`), which also pulls the waiting mailboxes forward with jitter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.errors import Verdict
from statemachine.core.incident_rules import (
    SUCCESS,
    TRANSIENT,
    CodeCount,
    IncidentThresholds,
    Opening,
    WindowCounts,
    should_close,
    should_open,
)
from statemachine.core.states import FailureKind, State
from statemachine.store import webhooks
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Incident, Mailbox, RefreshOutcome, StateTransition

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
OUTCOME_RETENTION = timedelta(hours=48)
PRUNE_BATCH = 10_000
OPENED_EVENT, CLOSED_EVENT = "provider_incident_opened", "provider_incident_closed"


@dataclass(frozen=True)
class OpenedIncident:
    id: int
    provider: str
    opening: Opening


def _failing(provider: str) -> Any:
    """Mailboxes an incident holds back: retrying/degraded, and those disconnected by transient failures."""
    disconnected_transient = and_(
        Mailbox.state == State.DISCONNECTED.value,
        Mailbox.failure_kind == FailureKind.TRANSIENT.value,
        Mailbox.next_refresh_at.is_not(None),
    )
    return and_(
        Mailbox.provider == provider,
        or_(Mailbox.state.in_([State.RETRYING.value, State.DEGRADED.value]), disconnected_transient),
    )


async def window_counts(session: AsyncSession, provider: str, since: datetime) -> WindowCounts:
    """One provider's outcomes since `since`: per (kind, code), plus distinct transient mailboxes."""
    rows = (
        await session.execute(
            select(
                RefreshOutcome.outcome,
                RefreshOutcome.code,
                func.count(),
                func.count(RefreshOutcome.mailbox_id.distinct()),
                func.grouping(RefreshOutcome.code),
            )
            .where(RefreshOutcome.provider == provider, RefreshOutcome.at > since)
            .group_by(func.grouping_sets(RefreshOutcome.outcome, tuple_(RefreshOutcome.outcome, RefreshOutcome.code)))
        )
    ).all()
    per_kind = {kind: (cycles, boxes) for kind, _, cycles, boxes, grouped in rows if grouped}
    codes = tuple(CodeCount(kind, code, cycles, boxes) for kind, code, cycles, boxes, grouped in rows if not grouped)
    return WindowCounts(
        cycles=sum(cycles for cycles, _ in per_kind.values()),
        successes=per_kind.get(SUCCESS, (0, 0))[0],
        transient_cycles=per_kind.get(TRANSIENT, (0, 0))[0],
        transient_mailboxes=per_kind.get(TRANSIENT, (0, 0))[1],
        codes=tuple(c for c in codes if c.kind != SUCCESS),
    )


HISTORY_COLUMNS = ["mailbox_id", "event", "from_state", "to_state", "reason", "actor", "attempt", "at"]


def _history_from(rows: Any, event: str, reason: str, at: datetime) -> Any:
    """INSERT one history row (from = to = state, actor system) per row of `rows` (id, state, attempt count)."""
    values = select(
        rows.c.id, literal(event), rows.c.state, rows.c.state, literal(reason), literal(SYSTEM_ACTOR),
        rows.c.token_refresh_attempt_count, literal(at),
    )  # fmt: skip
    return insert(StateTransition).from_select(HISTORY_COLUMNS, values)


def _failing_rows(provider: str, *, update: bool) -> Any:
    """The held-back mailboxes, locked without waiting: SKIP LOCKED passes over rows a cycle holds right now.

    Never waiting is what keeps this deadlock-free next to concurrent cycles (each holds its own row
    FOR UPDATE, and a history row's foreign key needs a KEY SHARE lock on its mailbox). A skipped
    mailbox is mid-cycle: that cycle writes its own history row.
    """
    columns = (Mailbox.id, Mailbox.state, Mailbox.token_refresh_attempt_count)
    lock = {"key_share": True, "skip_locked": True, "read": not update}  # FOR KEY SHARE / FOR NO KEY UPDATE
    return select(*columns).where(_failing(provider)).with_for_update(**lock).cte("failing")


async def _record_opened(session: AsyncSession, provider: str, reason: str, at: datetime) -> None:
    await session.execute(_history_from(_failing_rows(provider, update=False), OPENED_EVENT, reason, at))


async def _pull_forward(
    session: AsyncSession, provider: str, now: datetime, spread_seconds: float, reason: str
) -> None:
    """Retry the held-back mailboxes soon, spread over `spread_seconds`, and record it in their history."""
    locked = _failing_rows(provider, update=True)
    soon = literal(now) + func.make_interval(0, 0, 0, 0, 0, 0, func.random() * spread_seconds)
    pulled = (
        update(Mailbox)
        .where(Mailbox.id == locked.c.id)
        .values(next_refresh_at=func.least(func.coalesce(Mailbox.next_refresh_at, soon), soon))
        .returning(Mailbox.id, Mailbox.state, Mailbox.token_refresh_attempt_count)
        .cte("pulled")
    )
    await session.execute(_history_from(pulled, CLOSED_EVENT, reason, now))


@dataclass
class IncidentGuard:
    """The cycle's `OutcomeObserver`; `listeners` hear of every incident this process opens (metrics)."""

    rules: IncidentThresholds
    listeners: list[Callable[[OpenedIncident], None]] = field(default_factory=list)

    async def observe(
        self, session: AsyncSession, *, provider: str, mailbox_id: int, verdict: Verdict | None, at: datetime
    ) -> bool:
        """Record the outcome; return True while an incident is open for the provider (opening one if due)."""
        outcome = SUCCESS if verdict is None else verdict.kind.value
        code = None if verdict is None else verdict.code
        values = {"provider": provider, "mailbox_id": mailbox_id, "outcome": outcome, "code": code, "at": at}
        open_id = select(Incident.id).where(Incident.provider == provider, Incident.status == "open").scalar_subquery()
        # one round trip per cycle for the common case: record the outcome and read whether an incident is open
        if await session.scalar(insert(RefreshOutcome).values(**values).returning(open_id)) is not None:
            return True
        if verdict is None:
            return False
        counts = await window_counts(session, provider, at - timedelta(seconds=self.rules.window_seconds))
        opening = should_open(provider, counts, self.rules)
        if opening is None:
            return False
        await self._open(session, provider, opening, at)
        return True

    async def _open(self, session: AsyncSession, provider: str, opening: Opening, at: datetime) -> None:
        statement = (
            insert(Incident)
            .values(
                provider=provider,
                cause=opening.cause,
                code=opening.code,
                failure_ratio=opening.failure_ratio,
                mailboxes_affected=opening.mailboxes,
                opened_at=at,
            )
            .on_conflict_do_nothing(index_elements=[Incident.provider], index_where=Incident.status == "open")
            .returning(Incident.id)
        )
        incident_id = await session.scalar(statement)
        if incident_id is None:
            return  # another cycle opened it first; it wrote the rows and raised the alert
        reason = f"Provider incident opened: {opening.cause}. Failures are not escalated and no email is sent."
        await _record_opened(session, provider, reason, at)
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


async def close_recovered(sessionmaker: Sessionmaker, rules: IncidentThresholds, now: datetime) -> list[int]:
    """Close every open incident whose provider recovered; return the closed incidents' ids."""
    async with sessionmaker() as session:
        candidates = (await session.execute(select(Incident.id).where(Incident.status == "open"))).scalars().all()
    closed = []
    for incident_id in candidates:
        async with sessionmaker() as session, session.begin():
            if await _close_if_recovered(session, incident_id, rules, now):
                closed.append(incident_id)
    return closed


async def _close_if_recovered(
    session: AsyncSession, incident_id: int, rules: IncidentThresholds, now: datetime
) -> bool:
    statement = select(Incident).where(Incident.id == incident_id, Incident.status == "open")
    incident = (await session.execute(statement.with_for_update(skip_locked=True))).scalar_one_or_none()
    if incident is None:
        return False
    counts = await window_counts(session, incident.provider, now - timedelta(seconds=rules.window_seconds))
    if not should_close(counts, rules):
        return False
    incident.status, incident.closed_at = "closed", now
    await webhooks.queue_incident(
        session, incident_id=incident.id, provider=incident.provider, cause=incident.cause, code=incident.code,
        opened_at=incident.opened_at, closed_at=now,
    )  # fmt: skip
    reason = "Provider incident closed: the provider answers again; retrying soon."
    await _pull_forward(session, incident.provider, now, rules.recovery_spread_seconds, reason)
    logger.warning(
        "provider incident closed",
        extra={"incident_id": incident.id, "provider": incident.provider, "cause": incident.cause,
               "open_seconds": round((now - incident.opened_at).total_seconds(), 1)},
    )  # fmt: skip
    return True


async def prune_outcomes(sessionmaker: Sessionmaker, now: datetime) -> int:
    """Delete outcome rows older than the retention, in batches so no transaction grows large."""
    cutoff, total = now - OUTCOME_RETENTION, 0
    while True:
        batch = select(RefreshOutcome.id).where(RefreshOutcome.at < cutoff).limit(PRUNE_BATCH)
        async with sessionmaker() as session, session.begin():
            deleted = (await session.execute(delete(RefreshOutcome).where(RefreshOutcome.id.in_(batch)))).rowcount
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
    return [
        {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row._mapping.items()}
        for row in await session.execute(statement)
    ]


async def open_counts(session: AsyncSession) -> dict[str, int]:
    """Open incidents per provider, for the gauge."""
    statement = select(Incident.provider, func.count()).where(Incident.status == "open").group_by(Incident.provider)
    return {provider: count for provider, count in await session.execute(statement)}
