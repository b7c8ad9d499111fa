"""The incident guard on real PostgreSQL, through the cycle `tokenwarden refresh` runs (respx at the HTTP edge)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from sqlalchemy import event, text

from statemachine.core.errors import Verdict
from statemachine.core.incident_rules import WindowCounts
from statemachine.core.states import FailureKind
from statemachine.services.cycle import run_cycle
from statemachine.services.runtime import Runtime
from statemachine.store import incidents
from statemachine.store.incidents import IncidentGuard, close_recovered, prune_outcomes, window_counts
from tests.database import MICROSOFT_TOKEN_URL, TOKEN_URL
from tests.factories import add_mailbox

INVALID_CLIENT = httpx.Response(401, json={"error": "invalid_client", "error_description": "Unauthorized"})
OUTAGE = Verdict(FailureKind.TRANSIENT, "http_503", "Google is unavailable.")
REVOKED = Verdict(FailureKind.PERMANENT, "invalid_grant", "Google says access was revoked.")
CONSENT = Verdict(FailureKind.PERMANENT, "consent_required", "Google says permission was withdrawn.")


async def mailboxes(runtime: Runtime, count: int) -> list[int]:
    return [await add_mailbox(runtime, f"1//tok-{i}-SECRET", address=f"box{i}@gmail.test") for i in range(count)]


async def rows(runtime: Runtime, sql: str) -> list[tuple]:
    async with runtime.sessionmaker() as session:
        return [tuple(row) for row in await session.execute(text(sql))]


async def test_a_rotated_client_secret_opens_one_config_incident_and_alerts_once(runtime, provider, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="statemachine.store.incidents")
    provider.return_value = INVALID_CLIENT
    ids = await mailboxes(runtime, 7)
    results = [await run_cycle(runtime.cycle_deps(), mailbox_id, actor="cli") for mailbox_id in ids]
    assert [r.verdict.code for r in results] == ["invalid_client"] * 7
    ((status, code, cause, affected),) = await rows(
        runtime, "select status, code, cause, mailboxes_affected from incidents"
    )
    assert (status, code, affected) == ("open", "invalid_client", 5)
    assert "client secret" in cause
    assert [r.message for r in caplog.records] == ["provider incident opened"]
    assert len(await rows(runtime, "select 1 from refresh_outcomes where outcome = 'config'")) == 7
    opened = await rows(
        runtime, "select mailbox_id from mailbox_state_transitions where event = 'provider_incident_opened'"
    )
    assert sorted(m for (m,) in opened) == ids[:4]  # those already failing when the fifth crossed the threshold
    assert await rows(runtime, "select 1 from notifications") == []


async def test_two_cycles_opening_at_once_make_one_incident_and_both_see_it(runtime) -> None:
    ids = await mailboxes(runtime, 6)
    guard = runtime.incidents
    now = datetime.now(UTC)
    async with runtime.sessionmaker() as session, session.begin():
        for mailbox_id in ids[:4]:
            await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=now)

    async def fail(mailbox_id: int) -> bool:
        async with runtime.sessionmaker() as session, session.begin():
            seen = await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=now)
            await asyncio.sleep(0.2)  # hold the transaction open so the other insert has to wait on ours
            return seen

    assert await asyncio.gather(fail(ids[4]), fail(ids[5])) == [True, True]
    assert len(await rows(runtime, "select 1 from incidents")) == 1


async def test_an_outage_holds_transient_failures_only_and_an_invalid_grant_storm_opens_its_own(runtime) -> None:
    ids = await mailboxes(runtime, 12)
    guard, now = runtime.incidents, datetime.now(UTC)

    async def held(mailbox_id: int, verdict: Verdict) -> bool:
        async with runtime.sessionmaker() as session, session.begin():
            return await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=verdict, at=now)

    assert [await held(m, OUTAGE) for m in ids[:5]] == [False] * 4 + [True]  # the fifth opens the outage
    assert [await held(m, REVOKED) for m in ids[5:9]] == [False] * 4  # users' own: told on schedule
    assert await held(ids[9], REVOKED) is True  # half the window now: an invalid_grant storm of its own
    assert (await held(ids[10], OUTAGE), await held(ids[11], CONSENT)) == (True, False)
    assert await rows(runtime, "select kind, code from incidents where status = 'open' order by id") == [
        ("transient", None),
        ("permanent", "invalid_grant"),
    ]


async def test_closing_retries_the_waiting_mailboxes_soon_and_writes_history(runtime, provider) -> None:
    provider.return_value = httpx.Response(400, json={"error": "invalid_grant"})
    confirming = await add_mailbox(runtime, "1//revoked-SECRET", address="revoked@gmail.test")
    await run_cycle(runtime.cycle_deps(), confirming, actor="worker")
    provider.return_value = httpx.Response(503)
    ids = await mailboxes(runtime, 6)
    for mailbox_id in [*ids, confirming]:  # the confirming cycle meets the outage: held, still confirming
        await run_cycle(runtime.cycle_deps(), mailbox_id, actor="worker")
    assert await rows(runtime, f"select failure_kind from mailboxes where id = {confirming}") == [("permanent",)]
    async with runtime.sessionmaker() as session, session.begin():  # they had climbed to long delays
        await session.execute(text("update mailboxes set next_refresh_at = now() + interval '2 hours'"))
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert await close_recovered(runtime.sessionmaker, runtime.settings.incidents, later) == []  # quiet: unknown
    async with runtime.sessionmaker() as session, session.begin():  # another mailbox's refresh works again
        await runtime.incidents.observe(
            session, provider="google", mailbox_id=ids[0], verdict=None, at=later - timedelta(minutes=1)
        )
    [incident] = await close_recovered(runtime.sessionmaker, runtime.settings.incidents, later)
    waiting = await rows(runtime, "select id, next_refresh_at from mailboxes where state = 'retrying'")
    assert sorted(incident.pulled) == sorted(waiting)  # each with its new due time, to be timed exactly
    assert len(waiting) == 7
    assert all(later <= due <= later + timedelta(seconds=60) for _, due in waiting)
    closed = await rows(runtime, "select from_state, to_state, actor from mailbox_state_transitions "
                                 "where event = 'provider_incident_closed'")  # fmt: skip
    assert closed == [("retrying", "retrying", "system")] * 7
    ((status, closed_at),) = await rows(runtime, "select status, closed_at from incidents")
    assert (status, closed_at) == ("closed", later)


async def test_outcomes_older_than_48_hours_are_pruned(runtime) -> None:
    (mailbox_id,) = await mailboxes(runtime, 1)
    now = datetime.now(UTC)
    async with runtime.sessionmaker() as session, session.begin():
        for age_hours in (1, 47, 49, 100):
            at = now - timedelta(hours=age_hours)
            await runtime.incidents.observe(session, provider="google", mailbox_id=mailbox_id, verdict=None, at=at)
    assert await prune_outcomes(runtime.sessionmaker, now) == 2
    assert len(await rows(runtime, "select 1 from refresh_outcomes")) == 2


@pytest.mark.parametrize(("down", "up"), [("microsoft", "google"), ("google", "microsoft")])
async def test_one_providers_outage_opens_its_own_incident_and_the_other_keeps_escalating(
    runtime: Runtime, down: str, up: str
) -> None:
    """Six mailboxes of the provider that is down open an incident and wait; two failing mailboxes of the other
    one are not covered by it: they climb the ladder and are told, as on any other day."""
    urls = {"google": TOKEN_URL, "microsoft": MICROSOFT_TOKEN_URL}
    domains = {"google": "gmail.test", "microsoft": "contoso.test"}
    waiting = [
        await add_mailbox(runtime, f"tok-{down}-{i}", address=f"w{i}@{domains[down]}", provider=down) for i in range(6)
    ]
    escalating = [
        await add_mailbox(runtime, f"tok-{up}-{i}", address=f"e{i}@{domains[up]}", provider=up) for i in range(2)
    ]
    with respx.mock(using="httpx", assert_all_mocked=True) as mock:
        mock.post(urls[down]).respond(503)
        mock.post(urls[up]).respond(503)
        for _ in range(3):
            for mailbox_id in waiting + escalating:
                await run_cycle(runtime.cycle_deps(), mailbox_id, actor="worker")
    assert await rows(runtime, "select provider, status from incidents") == [(down, "open")]
    states = dict(await rows(runtime, "select id, state from mailboxes"))
    assert {states[m] for m in waiting} == {"retrying"}  # frozen while their provider is down
    assert {states[m] for m in escalating} == {"disconnected"}  # the whole ladder in three failed cycles
    told = await rows(runtime, "select distinct mailbox_id from notifications")
    assert {m for (m,) in told} == set(escalating)


class Clock:
    """The guards' process clock, which the tests move on with the database's (`count_due_now`)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def count_due_now(runtime: Runtime, clock: Clock) -> None:
    """Time passes: the provider's next window count is due, and the guards' clock says so too."""
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("update incident_window_checks set next_count_at = clock_timestamp()"))
    clock.now += 3600


async def test_two_workers_count_the_window_once_per_interval_and_the_next_count_opens_the_incident(
    runtime, monkeypatch
) -> None:
    """Two processes' guards at an outage's onset, their failures at once: the fleet counts the window once per
    interval (here N cycles / 1 per second), and the failure that finds it due and crossed opens and is held."""
    ids = await mailboxes(runtime, 6)
    monkeypatch.setattr(incidents, "WINDOW_ROWS_PER_SECOND", 1)
    monkeypatch.setattr(incidents, "SMALL_WINDOW", 0)  # every window is big
    counted = []

    async def counting(session, provider, since):  # type: ignore[no-untyped-def]
        counted.append(provider)
        return await window_counts(session, provider, since)

    monkeypatch.setattr(incidents, "window_counts", counting)
    clock = Clock()
    guards = [IncidentGuard(runtime.settings.incidents, clock=clock) for _ in range(2)]

    async def cycle(worker: int, mailbox_id: int, verdict: Verdict | None) -> bool:
        async with runtime.sessionmaker() as session, session.begin():
            return await guards[worker].observe(
                session, provider="google", mailbox_id=mailbox_id, verdict=verdict, at=datetime.now(UTC)
            )

    for mailbox_id in ids[:4]:
        await cycle(0, mailbox_id, None)
    assert await asyncio.gather(*(cycle(i % 2, m, OUTAGE) for i, m in enumerate(ids))) == [False] * 6
    assert counted == ["google"]  # the first failure counted 5 cycles: the next count is due 5 s later
    await count_due_now(runtime, clock)
    assert await cycle(1, ids[0], OUTAGE) is True  # 7 of 11 cycles failed, 6 mailboxes: opened, and held
    assert (await cycle(0, ids[1], OUTAGE), counted) == (True, ["google"] * 2)  # held by the open incident
    assert await rows(runtime, "select kind, mailboxes_affected from incidents") == [("transient", 6)]


def count_big_windows(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every window count finds 200,000 cycles (the next is due 2 s later); returns the providers counted."""
    counted: list[str] = []

    async def big_window(session, provider, since):  # type: ignore[no-untyped-def]
        counted.append(provider)
        return WindowCounts(cycles=200_000, successes=199_000, transient_cycles=1_000, transient_mailboxes=900)

    monkeypatch.setattr(incidents, "window_counts", big_window)
    return counted


async def test_the_next_count_waits_the_window_size_over_100_000_rows_per_second(runtime, monkeypatch) -> None:
    """Big fleets: failures keep being recorded, but a window of 200,000 cycles is counted every 2 s at most."""
    (mailbox_id,) = await mailboxes(runtime, 1)
    counted = count_big_windows(monkeypatch)
    clock = Clock()
    guard = IncidentGuard(runtime.settings.incidents, clock=clock)
    for _ in range(3):
        async with runtime.sessionmaker() as session, session.begin():
            await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=datetime.now(UTC))
    assert len(counted) == 1
    [(wait,)] = await rows(runtime, "select extract(epoch from next_count_at - clock_timestamp()) from "
                                    "incident_window_checks")  # fmt: skip
    assert 1.5 < wait <= 2.0
    assert len(await rows(runtime, "select 1 from refresh_outcomes")) == 3
    await count_due_now(runtime, clock)
    claimed = asyncio.Event()

    async def counting_slowly() -> None:
        async with runtime.sessionmaker() as session, session.begin():
            await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=datetime.now(UTC))
            claimed.set()
            await asyncio.sleep(5)  # the claimer's transaction stays open: nobody may queue behind it

    slow = asyncio.create_task(counting_slowly())
    await claimed.wait()
    async with runtime.sessionmaker() as session, session.begin():  # a big window's claim is passed over at once
        observing = guard.observe(
            session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=datetime.now(UTC)
        )
        assert await asyncio.wait_for(observing, timeout=2) is False
    assert len(counted) == 2
    slow.cancel()


async def test_a_process_claims_the_next_count_when_it_is_due_not_on_every_failure(runtime, monkeypatch) -> None:
    """At an outage's onset nearly every cycle fails. Once a process knows when the fleet's next count of a big
    window is due, its failures record their outcome and nothing more until then; the first after it counts."""
    (mailbox_id,) = await mailboxes(runtime, 1)
    counted = count_big_windows(monkeypatch)
    clock = Clock()
    counter, other = (IncidentGuard(runtime.settings.incidents, clock=clock) for _ in range(2))

    async def fail(guard: IncidentGuard) -> None:
        async with runtime.sessionmaker() as session, session.begin():
            await guard.observe(session, provider="google", mailbox_id=mailbox_id, verdict=OUTAGE, at=datetime.now(UTC))

    await fail(counter)  # counts 200,000 cycles: the fleet's next count is due in 2 s
    await fail(other)  # finds it not due, and learns when it will be
    sent: list[str] = []
    engine = runtime.sessionmaker.kw["bind"].sync_engine
    listener = lambda conn, cursor, statement, *rest: sent.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(5):
            await fail(other)
        claims = [statement for statement in sent if "incident_window_checks" in statement]
        assert (len(sent), claims, counted) == (5, [], ["google"])  # five outcome rows, no claim, no count

        await count_due_now(runtime, clock)
        await fail(other)
        assert counted == ["google", "google"]  # due: the next failure claims it and counts
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(await rows(runtime, "select 1 from refresh_outcomes")) == 8
