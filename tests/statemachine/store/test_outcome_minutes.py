"""The per-minute rollup of refresh outcomes on real PostgreSQL: equal to the raw counts, late rows, catch-up, locks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, text

from statemachine.services.runtime import Runtime
from statemachine.store import outcome_minutes
from statemachine.store.models import RefreshOutcome
from statemachine.store.outcome_minutes import LOCK_CLASS, MARGIN, RollUp, roll_up

NOW = datetime.now(UTC).replace(second=30, microsecond=0)
MINUTE = NOW.replace(second=0)  # what a run at NOW rolls up to
RAW = """
select date_trunc('minute', at, 'UTC'), provider, outcome, count(*) from refresh_outcomes
where at < :before group by 1, 2, 3 order by 1, 2, 3
"""
ROLLED = "select minute, provider, outcome, cycles from refresh_outcome_minutes order by 1, 2, 3"


async def add(runtime: Runtime, *ats: datetime, outcome: str = "success", provider: str = "google") -> None:
    rows = [{"provider": provider, "mailbox_id": 1, "outcome": outcome, "at": at} for at in ats]
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(RefreshOutcome), rows)


async def rows(runtime: Runtime, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with runtime.sessionmaker() as session:
        return [tuple(row) for row in await session.execute(text(sql), params)]


async def a_day_of_outcomes(runtime: Runtime) -> None:
    ago = [timedelta(seconds=s) for s in (1, 20, 31, 65, 90, 300, 301, 3_000, 10_800, 86_000, 120_000, 170_000)]
    await add(runtime, *(NOW - a for a in ago))
    await add(runtime, *(NOW - a for a in ago[::2]), outcome="transient")
    await add(runtime, *(NOW - a for a in ago[1::3]), outcome="permanent", provider="microsoft")


async def test_the_rollup_equals_the_raw_counts_and_running_it_again_changes_nothing(runtime: Runtime) -> None:
    await a_day_of_outcomes(runtime)
    assert await roll_up(runtime.sessionmaker, NOW) == RollUp(chunks=48, rolled_up_to=MINUTE)
    rolled = await rows(runtime, ROLLED)
    assert rolled == await rows(runtime, RAW, before=MINUTE)
    assert sum(cycles for *_, cycles in rolled) == 18  # of 22: the current minute's 4 rows wait for the next run
    assert await roll_up(runtime.sessionmaker, NOW) == RollUp(chunks=1, rolled_up_to=MINUTE)
    assert await rows(runtime, ROLLED) == rolled


async def test_the_hourly_read_is_the_raw_count_across_the_boundary(runtime: Runtime) -> None:
    await a_day_of_outcomes(runtime)
    since = NOW.replace(minute=0, second=0) - timedelta(hours=30)
    raw = (
        "select date_trunc('hour', at, 'UTC'), outcome, count(*) from refresh_outcomes where at >= :since group by 1, 2"
    )
    expected: dict[datetime, dict[str, int]] = {}
    for hour, outcome, cycles in await rows(runtime, raw, since=since):
        expected.setdefault(hour, {})[outcome] = cycles  # type: ignore[index, arg-type]
    async with runtime.sessionmaker() as session:
        assert await outcome_minutes.cycles_by_hour(session, since) == expected  # nothing rolled up: all raw
        await roll_up(runtime.sessionmaker, NOW - timedelta(minutes=10))  # the last 10 minutes stay raw
        assert await outcome_minutes.cycles_by_hour(session, since) == expected
        await roll_up(runtime.sessionmaker, NOW)
        assert await outcome_minutes.cycles_by_hour(session, since) == expected


async def test_a_late_row_in_a_rolled_up_minute_is_counted_by_the_next_run(runtime: Runtime) -> None:
    await a_day_of_outcomes(runtime)
    await roll_up(runtime.sessionmaker, NOW)
    late, too_late = MINUTE - timedelta(minutes=2), MINUTE - MARGIN - timedelta(minutes=1)
    await add(runtime, late, too_late, outcome="config")
    config = "select minute, cycles from refresh_outcome_minutes where outcome = 'config'"
    assert await rows(runtime, config) == []
    await roll_up(runtime.sessionmaker, NOW + timedelta(minutes=1))
    # within the margin: counted; committed more than MARGIN after the boundary passed it: left out, as documented
    assert await rows(runtime, config) == [(late.replace(second=0), 1)]


async def test_a_catch_up_after_downtime_goes_in_bounded_chunks(runtime: Runtime) -> None:
    await a_day_of_outcomes(runtime)
    await roll_up(runtime.sessionmaker, NOW - timedelta(hours=3))
    await add(runtime, *(NOW - timedelta(minutes=m) for m in range(0, 180, 7)))  # while the worker was down
    half_hour = timedelta(minutes=30)
    assert await roll_up(runtime.sessionmaker, NOW, half_hour) == RollUp(chunks=6, rolled_up_to=MINUTE)
    assert await rows(runtime, ROLLED) == await rows(runtime, RAW, before=MINUTE)


async def test_after_downtime_longer_than_the_retention_the_catch_up_starts_at_the_retention(runtime: Runtime) -> None:
    await roll_up(runtime.sessionmaker, NOW - timedelta(hours=60))
    await a_day_of_outcomes(runtime)
    assert await roll_up(runtime.sessionmaker, NOW) == RollUp(chunks=48, rolled_up_to=MINUTE)  # not 60
    assert await rows(runtime, ROLLED) == await rows(runtime, RAW, before=MINUTE)


async def test_a_run_while_another_holds_the_lock_passes_and_concurrent_runs_agree(runtime: Runtime) -> None:
    await a_day_of_outcomes(runtime)
    async with runtime.sessionmaker() as other, other.begin():
        await other.execute(select(func.pg_advisory_xact_lock(LOCK_CLASS, 0)))
        skipped = await asyncio.wait_for(roll_up(runtime.sessionmaker, NOW), 5)
    assert skipped == RollUp(chunks=0, rolled_up_to=None)
    assert await rows(runtime, ROLLED) == []
    await asyncio.gather(*(roll_up(runtime.sessionmaker, NOW) for _ in range(3)))
    assert await rows(runtime, ROLLED) == await rows(runtime, RAW, before=MINUTE)
    assert await rows(runtime, "select rolled_up_to from refresh_outcome_rollup") == [(MINUTE,)]
