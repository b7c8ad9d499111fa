"""Refresh outcomes per minute (migration 0011): the cron that rolls them up, and the read behind the ops pages.

`refresh_outcomes` gets one row per cycle, about 24 M a day at 1,000,000 mailboxes on 1-hour tokens: too
many to count on each view of /ops. `roll_up` (a worker cron, every minute) counts them into one row per
(minute, provider, outcome), up to the start of the current minute, and records that boundary;
`cycles_by_hour` reads the rolled-up minutes before it and the raw rows from it on, a minute or two of
rows. The refresh cycle writes nothing more than before: the rollup is read from the outcomes.

Late rows: a cycle stamps its outcome with its clock inside its transaction, so a row can commit after
its minute was rolled up. Every run counts the MARGIN before the boundary again, so a row that commits
within MARGIN of the boundary passing its `at` (the outcome transaction takes seconds) is counted by the
next run. A later one (a transaction open for minutes, a worker's clock that far behind the rolling one)
stays out of the pages' figures; the incident guard reads the raw rows and still sees it.

Several workers: each chunk takes a transaction-level advisory try-lock, so a concurrent run passes
instead of queueing; and each chunk is a recount (INSERT … SELECT count(*) … ON CONFLICT DO UPDATE SET
cycles = EXCLUDED.cycles), so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, union_all
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.providers import registry
from statemachine.store.db import Sessionmaker
from statemachine.store.incidents import OUTCOME_RETENTION
from statemachine.store.models import RefreshOutcome, RefreshOutcomeMinute, RefreshOutcomeRollup

MARGIN = timedelta(minutes=5)  # counted again on every run, for rows that commit after their minute was rolled up
# One chunk counts at most CHUNK + MARGIN of outcomes (about 1.1 M rows at 1 M mailboxes on 1-hour tokens):
# a catch-up after a day of downtime is a few dozen such statements, each committed with the boundary it reached.
CHUNK = timedelta(hours=1)
LOCK_CLASS = 0x1D0D  # advisory lock space of the rollup: (this, 0); 0x1D0C is the incident window's


@dataclass(frozen=True)
class RollUp:
    """What one run did: `chunks` statements counted, up to `rolled_up_to` (None: another run held the lock)."""

    chunks: int
    rolled_up_to: datetime | None


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _trunc(unit: str, column: Any) -> Any:
    return func.date_trunc(unit, column, "UTC")


def _every_provider() -> Any:
    """Always true (outcomes are their mailboxes', whose CHECK lists these names), but it lets the (provider, at)
    index serve a range of `at` on any PostgreSQL: 18 would skip-scan without it, older ones read the table."""
    return RefreshOutcome.provider.in_(registry.NAMES)


async def roll_up(sessionmaker: Sessionmaker, now: datetime, chunk: timedelta = CHUNK) -> RollUp:
    """Count the outcomes before `now`'s minute into per-minute rows, a chunk per transaction.

    A first run starts at the retention (48 h ago); a run after downtime catches up from where the last
    one stopped, or from the retention if that is later. Each chunk commits with the boundary it reached,
    so a run cut short loses nothing.
    """
    target, chunks = _minute(now), 0
    kept_from = target - OUTCOME_RETENTION  # older outcomes are pruned: nothing to count before it
    while True:
        async with sessionmaker() as session, session.begin():
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_CLASS, 0))):
                return RollUp(chunks, None)
            done = await session.scalar(select(RefreshOutcomeRollup.rolled_up_to))
            start = kept_from if done is None else max(done - MARGIN, kept_from)
            done = start if done is None else max(done, start)
            end = max(done, min(done + chunk, target))  # never backwards, whatever this worker's clock says
            await session.execute(_recount(start, end))
            mark = insert(RefreshOutcomeRollup).values(id=1, rolled_up_to=end)
            await session.execute(mark.on_conflict_do_update(index_elements=["id"], set_={"rolled_up_to": end}))
        chunks += 1
        if end >= target:
            return RollUp(chunks, end)


def _recount(start: datetime, end: datetime) -> Any:
    """INSERT the counts of [start, end) per (minute, provider, outcome), replacing any earlier count."""
    o = RefreshOutcome
    minute = _trunc("minute", o.at)
    counted = (
        select(minute, o.provider, o.outcome, func.count())
        .where(_every_provider(), o.at >= start, o.at < end)
        .group_by(minute, o.provider, o.outcome)
    )
    put = insert(RefreshOutcomeMinute).from_select(["minute", "provider", "outcome", "cycles"], counted)
    return put.on_conflict_do_update(
        index_elements=["minute", "provider", "outcome"], set_={"cycles": put.excluded.cycles}
    )


async def cycles_by_hour(session: AsyncSession, since: datetime) -> dict[datetime, dict[str, int]]:
    """{hour: {outcome: cycles}} of the cycles since `since`, every provider.

    The rolled-up minutes from `since`'s own minute, then the raw rows from the boundary on: exact for
    an hour-aligned `since`; otherwise up to a minute's cycles before `since` are counted too. Reading
    the boundary first and splitting at it in both parts counts no row twice, even if a run commits
    meanwhile (it only makes the minutes before the boundary more complete).
    """
    done = await session.scalar(select(RefreshOutcomeRollup.rolled_up_to))
    o, m = RefreshOutcome, RefreshOutcomeMinute
    raw_hour = _trunc("hour", o.at)
    parts = [
        select(raw_hour.label("hour"), o.outcome, func.count().label("cycles"))
        .where(_every_provider(), o.at >= max(since, done or since))
        .group_by(raw_hour, o.outcome)
    ]
    if done is not None and done > since:
        parts.append(
            select(_trunc("hour", m.minute), m.outcome, m.cycles).where(m.minute >= _minute(since), m.minute < done)
        )
    both = union_all(*parts).subquery()
    statement = select(both.c.hour, both.c.outcome, func.sum(both.c.cycles)).group_by(both.c.hour, both.c.outcome)
    table: dict[datetime, dict[str, int]] = {}
    for hour, outcome, cycles in await session.execute(statement):
        table.setdefault(hour, {})[outcome] = int(cycles)
    return table


async def prune(sessionmaker: Sessionmaker, now: datetime) -> int:
    """Delete the minutes older than the outcomes' retention (the raw rows go by the same rule)."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(RefreshOutcomeMinute).where(RefreshOutcomeMinute.minute < now - OUTCOME_RETENTION)
        )
        return cast(CursorResult[Any], result).rowcount  # a DELETE's result is a cursor result
