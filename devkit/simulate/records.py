"""What `tokenwarden simulate` reads from a scenario's database: progress counts, due mailboxes, the record.

Why here and not in the metrics: the metrics are pure, over plain records in simulated minutes; this
is the only place that knows the tables and turns timestamps into minutes since the scenario began.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devkit.simulate.model import Change, Cycle, Email
from statemachine.core.states import State
from statemachine.store.models import Incident, Mailbox, Notification, RefreshOutcome, StateTransition


@dataclass(frozen=True)
class Clock:
    """Converts database timestamps to simulated minutes since `start` (and back)."""

    start: datetime
    minute_seconds: float

    def minutes(self, at: datetime) -> float:
        return (at - self.start).total_seconds() / self.minute_seconds

    def moment(self, minutes: float) -> datetime:
        return self.start + timedelta(seconds=minutes * self.minute_seconds)


@dataclass(frozen=True)
class Progress:
    cycles: int
    successes: int
    states: dict[str, int]
    emails: int
    open_incident: str | None

    def line(self) -> str:
        ok = f"{self.successes / self.cycles:.1%} ok" if self.cycles else "none yet"
        states = " ".join(f"{state.value} {self.states.get(state.value, 0)}" for state in State)
        incident = f" | incident open: {self.open_incident}" if self.open_incident else ""
        return f"cycles {self.cycles} ({ok}) | {states} | emails {self.emails}{incident}"


@dataclass
class Record:
    """Everything a scenario's metrics need, in simulated minutes."""

    cycles: list[Cycle] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    emails: list[Email] = field(default_factory=list)
    final_states: dict[int, str] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)


async def progress(session: AsyncSession) -> Progress:
    outcomes = select(func.count(), func.count().filter(RefreshOutcome.outcome == "success"))
    cycles, successes = (await session.execute(outcomes)).one()
    states = dict((await session.execute(select(Mailbox.state, func.count()).group_by(Mailbox.state))).all())
    emails = await session.scalar(select(func.count()).select_from(Notification)) or 0
    incident = await session.scalar(select(func.coalesce(Incident.code, "transient")).where(Incident.status == "open"))
    return Progress(cycles, successes, states, emails, incident)


async def due_next(session: AsyncSession, ids: Collection[int], now: datetime, until: datetime) -> int | None:
    """The healthy mailbox among `ids` due soonest, if one is due by `until`: a fault armed on it hits now."""
    if not ids:
        return None
    statement = (
        select(Mailbox.id)
        .where(
            Mailbox.id.in_(ids),
            Mailbox.state == State.HEALTHY.value,
            Mailbox.next_refresh_at >= now,
            Mailbox.next_refresh_at <= until,
        )
        .order_by(Mailbox.next_refresh_at)
        .limit(1)
    )
    return await session.scalar(statement)


async def collect(session: AsyncSession, clock: Clock, delivered: Mapping[str, datetime]) -> Record:
    """The whole scenario's history, read after the worker stopped; `delivered`: Message-ID -> SMTP acceptance."""
    record = Record()
    outcomes = select(RefreshOutcome.mailbox_id, RefreshOutcome.at, RefreshOutcome.outcome)
    for mailbox_id, at, outcome in await session.execute(outcomes.order_by(RefreshOutcome.at, RefreshOutcome.id)):
        record.cycles.append(Cycle(mailbox_id, clock.minutes(at), outcome))
    history = select(
        StateTransition.mailbox_id, StateTransition.at, StateTransition.event, StateTransition.from_state,
        StateTransition.to_state,
    ).order_by(StateTransition.at, StateTransition.id)  # fmt: skip
    for mailbox_id, at, event, from_state, to_state in await session.execute(history):
        record.changes.append(Change(mailbox_id, clock.minutes(at), event, from_state, to_state))
    outbox = select(Notification.mailbox_id, Notification.kind, Notification.created_at, Notification.message_id)
    for mailbox_id, kind, created, message_id in await session.execute(outbox.order_by(Notification.id)):
        arrived = delivered.get(message_id)
        minute = None if arrived is None else clock.minutes(arrived)
        record.emails.append(Email(mailbox_id, kind, clock.minutes(created), minute))
    record.final_states = dict((await session.execute(select(Mailbox.id, Mailbox.state))).all())
    incidents = select(Incident.provider, Incident.cause, Incident.code, Incident.opened_at, Incident.closed_at)
    for provider, cause, code, opened, closed in await session.execute(incidents.order_by(Incident.id)):
        record.incidents.append(
            {
                "provider": provider,
                "code": code,
                "cause": cause,
                "opened_minute": round(clock.minutes(opened), 1),
                "closed_minute": None if closed is None else round(clock.minutes(closed), 1),
            }
        )
    return record
