"""Reminders for disconnected mailboxes: the pure schedule, then the outbox rows through a real PostgreSQL.

The clock is a parameter (`now`), so +1 d / +3 d / +7 d are tested without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from sqlalchemy import text

from statemachine.core.states import Event
from statemachine.services.cycle import run_cycle
from statemachine.services.operations import operator_action
from statemachine.services.reminders import ago, due_occasion, queue_due_reminders
from statemachine.services.runtime import Runtime
from statemachine.store.models import Mailbox
from tests.factories import add_mailbox

DAYS = (1.0, 3.0, 7.0)
T0 = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
INVALID_GRANT = httpx.Response(400, json={"error": "invalid_grant", "error_description": "Token has been revoked."})
ACCESS = {"access_token": "ya29.access-SECRET", "expires_in": 3599}


@pytest.mark.parametrize(
    ("elapsed_days", "sent", "expected"),
    [
        (0.5, set(), None),
        (1.0, set(), "1d"),
        (2.0, {"1d"}, None),
        (3.5, {"1d"}, "3d"),
        (3.5, {"1d", "3d"}, None),
        (7.0, {"1d", "3d"}, "7d"),
        (8.0, set(), "7d"),  # a worker that was down sends the latest one, not three at once
        (8.0, {"7d"}, None),
        (14.5, set(), None),  # too late to be useful
    ],
)
def test_due_occasion(elapsed_days: float, sent: set[str], expected: str | None) -> None:
    assert due_occasion(T0, T0 + timedelta(days=elapsed_days), DAYS, sent) == expected


def test_fractional_days_for_fast_demos() -> None:
    days = (0.0001, 0.0003)  # 8.64 s and 25.92 s
    assert due_occasion(T0, T0 + timedelta(seconds=9), days, set()) == "0.0001d"
    assert due_occasion(T0, T0 + timedelta(seconds=26), days, {"0.0001d"}) == "0.0003d"


def test_no_configured_days_means_no_reminders() -> None:
    assert due_occasion(T0, T0 + timedelta(days=30), (), set()) is None


@pytest.mark.parametrize(
    ("elapsed", "words"),
    [
        (timedelta(days=3, hours=5), "3 days ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(hours=1, minutes=59), "1 hour ago"),
        (timedelta(minutes=5), "5 minutes ago"),
        (timedelta(seconds=9), "less than a minute ago"),
    ],
)
def test_ago(elapsed: timedelta, words: str) -> None:
    assert ago(elapsed) == words


# --- through PostgreSQL -------------------------------------------------------------------------------


async def disconnected_mailbox(runtime: Runtime, provider: respx.Route, address: str = "ana@gmail.test") -> int:
    """A mailbox disconnected by a confirmed invalid_grant (its owner got the 'reconnect now' email)."""
    provider.return_value = INVALID_GRANT
    mailbox_id = await add_mailbox(runtime, f"1//refresh-{address}", address=address)
    for _ in range(2):
        await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")
    return mailbox_id


async def disconnected_at(runtime: Runtime, mailbox_id: int) -> datetime:
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.state == "disconnected"
        return mailbox.state_changed_at


async def remind(runtime: Runtime, now: datetime) -> list[tuple[int, str]]:
    async with runtime.sessionmaker() as session, session.begin():
        return await queue_due_reminders(session, runtime.events, DAYS, now)


async def reminder_rows(runtime: Runtime) -> list[dict]:
    async with runtime.sessionmaker() as session:
        result = await session.execute(
            text("select * from notifications where kind = 'token_refresh_reminder' order by id")
        )
        return [dict(row._mapping) for row in result]


async def test_one_reminder_at_each_of_1_3_and_7_days(runtime, provider) -> None:
    mailbox_id = await disconnected_mailbox(runtime, provider)
    at = await disconnected_at(runtime, mailbox_id)
    seen = []
    for elapsed in (0.5, 1.0, 1.5, 3.0, 3.2, 7.0, 7.5, 13.0):
        seen.append(await remind(runtime, at + timedelta(days=elapsed)))
    assert seen == [[], [(mailbox_id, "1d")], [], [(mailbox_id, "3d")], [], [(mailbox_id, "7d")], [], []]
    rows = await reminder_rows(runtime)
    assert [row["dedupe_key"].rsplit(":", 1)[1] for row in rows] == ["1d", "3d", "7d"]
    first = rows[0]
    assert first["recipient"] == "owner@example.test"
    assert first["status"] == "pending"
    assert "ana@gmail.test" in first["subject"]
    assert "Disconnected 1 day ago" in first["body_text"]
    assert "revoked" in first["body_text"]
    assert f"https://tokenwarden.test/mailboxes/{mailbox_id}/reconnect" in first["body_html"]
    assert len({row["message_id"] for row in rows}) == 3


async def test_no_reminder_after_recovery(runtime, provider) -> None:
    mailbox_id = await disconnected_mailbox(runtime, provider)
    at = await disconnected_at(runtime, mailbox_id)
    assert await remind(runtime, at + timedelta(days=1)) == [(mailbox_id, "1d")]
    provider.return_value = httpx.Response(200, json=ACCESS)
    await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, Event.OPS_RETRY_NOW, "operator:t", None)
    result = await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")
    assert result.outcome is not None
    assert result.outcome.to_state == "healthy"
    assert await remind(runtime, at + timedelta(days=3)) == []
    assert await remind(runtime, at + timedelta(days=7)) == []
    assert len(await reminder_rows(runtime)) == 1


async def test_no_reminder_while_a_provider_incident_is_open(runtime, provider) -> None:
    mailbox_id = await disconnected_mailbox(runtime, provider)
    at = await disconnected_at(runtime, mailbox_id)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("insert into incidents (provider, cause) values ('google', 'token endpoint down')"))
    assert await remind(runtime, at + timedelta(days=1)) == []
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("update incidents set status = 'closed', closed_at = now()"))
    assert await remind(runtime, at + timedelta(days=1, hours=1)) == [(mailbox_id, "1d")]


async def test_an_incident_at_another_provider_does_not_stop_reminders(runtime, provider) -> None:
    mailbox_id = await disconnected_mailbox(runtime, provider)
    at = await disconnected_at(runtime, mailbox_id)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(text("insert into incidents (provider, cause) values ('microsoft', 'outage')"))
    assert await remind(runtime, at + timedelta(days=1)) == [(mailbox_id, "1d")]


async def test_operator_disconnects_get_no_reminders(runtime, provider) -> None:
    provider.return_value = httpx.Response(503)
    mailbox_id = await add_mailbox(runtime, "1//refresh-ops")
    for _ in range(2):  # healthy -> retrying -> degraded: the owner got the "having trouble" email
        await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")
    await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, Event.OPS_DISCONNECT, "operator:t", None)
    at = await disconnected_at(runtime, mailbox_id)
    assert await remind(runtime, at + timedelta(days=1)) == []
    assert await remind(runtime, at + timedelta(days=7)) == []


async def test_each_mailbox_gets_its_own_reminder_once_even_when_run_twice(runtime, provider) -> None:
    first = await disconnected_mailbox(runtime, provider, "ana@gmail.test")
    second = await disconnected_mailbox(runtime, provider, "bob@gmail.test")
    at = max(await disconnected_at(runtime, first), await disconnected_at(runtime, second))
    assert sorted(await remind(runtime, at + timedelta(days=1))) == [(first, "1d"), (second, "1d")]
    assert await remind(runtime, at + timedelta(days=1)) == []
    assert {row["mailbox_id"] for row in await reminder_rows(runtime)} == {first, second}
