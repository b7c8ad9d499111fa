"""A cycle's takeovers and routine writes asked for in one event-loop turn go as one statement of each kind, each
still on its own claim and its own lease.

Real PostgreSQL: the claims come from the due-scan's own statement.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from statemachine.core.access_tokens import SealedAccessToken
from statemachine.services.runtime import Runtime
from statemachine.store import scheduling
from statemachine.store.cycle_rows import Lease, RoutineRefresh, SharedStatements
from statemachine.store.repository import UnknownMailboxError
from statemachine.store.statements import StatementPool, statement_pool
from tests.jobs.support import add_mailboxes, fetch, tokens

LEASE_SECONDS = 60


async def claims(runtime: Runtime, count: int) -> list[scheduling.Claim]:
    await add_mailboxes(runtime, tokens(count, "takeover"))
    async with runtime.sessionmaker() as session, session.begin():
        return await scheduling.claim_due(session, datetime.now(UTC), count, LEASE_SECONDS)


def counting(monkeypatch: pytest.MonkeyPatch, pool: StatementPool) -> list[str]:
    """The statements `pool.fetch` sends (the shared statements' only way to the database)."""
    sent: list[str] = []
    real_fetch = pool.fetch

    async def fetch(query: str, *args: Any) -> list[asyncpg.Record]:
        sent.append(query)
        return await real_fetch(query, *args)

    monkeypatch.setattr(pool, "fetch", fetch)
    return sent


async def test_takeovers_asked_in_one_turn_go_as_one_statement_each_with_its_own_owner_and_lease(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed = await claims(runtime, 5)
    sent = counting(monkeypatch, runtime.statements)
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    owners = [uuid.uuid4() for _ in claimed]
    untils = [until + timedelta(seconds=i) for i in range(len(claimed))]
    leases = await asyncio.gather(
        *(
            runtime.shared.take_over(c.mailbox_id, c.owner, o, u)
            for c, o, u in zip(claimed, owners, untils, strict=True)
        )
    )
    assert len(sent) == 1
    assert [(lease.mailbox_id, lease.owner) for lease in leases if lease] == [
        (c.mailbox_id, o) for c, o in zip(claimed, owners, strict=True)
    ]
    rows = await fetch(runtime, "select id, lease_owner, lease_until from mailboxes order by id")
    assert rows == sorted((c.mailbox_id, o, u) for c, o, u in zip(claimed, owners, untils, strict=True))
    later = await asyncio.gather(*(runtime.shared.take_over(c.mailbox_id, c.owner, uuid.uuid4(), until)
                                   for c in claimed))  # fmt: skip
    assert later == [None] * len(claimed)  # each claim was taken over once: a copy of the job does nothing
    assert len(sent) == 2


async def test_of_two_takeovers_of_one_claim_in_one_turn_exactly_one_wins(runtime: Runtime) -> None:
    [claim] = await claims(runtime, 1)
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    first, second = uuid.uuid4(), uuid.uuid4()
    leases = await asyncio.gather(
        runtime.shared.take_over(claim.mailbox_id, claim.owner, first, until),
        runtime.shared.take_over(claim.mailbox_id, claim.owner, second, until),
    )
    [won] = [lease for lease in leases if lease is not None]
    assert won.owner in (first, second)
    assert await fetch(runtime, "select lease_owner from mailboxes") == [(won.owner,)]


async def test_a_finished_claim_or_a_removed_mailbox_gets_none_and_an_unknown_id_raises_beside_a_good_one(
    runtime: Runtime,
) -> None:
    good, removed = await claims(runtime, 2)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(
            text("update mailboxes set removed_at = now() where id = :id"), {"id": removed.mailbox_id}
        )
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    ended = await asyncio.gather(
        runtime.shared.take_over(good.mailbox_id, good.owner, uuid.uuid4(), until),
        runtime.shared.take_over(good.mailbox_id, uuid.uuid4(), uuid.uuid4(), until),  # not its claim
        runtime.shared.take_over(removed.mailbox_id, removed.owner, uuid.uuid4(), until),
        runtime.shared.take_over(10**12, uuid.uuid4(), uuid.uuid4(), until),
        return_exceptions=True,
    )
    assert isinstance(ended[0], Lease)
    assert ended[1:3] == [None, None]
    assert isinstance(ended[3], UnknownMailboxError)


async def test_a_failed_statement_raises_in_each_cycle_that_asked(runtime: Runtime, database_url: str) -> None:
    claimed = await claims(runtime, 3)
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    async with statement_pool(database_url, max_size=1) as pool:
        takeovers = SharedStatements(pool)
    ended = await asyncio.gather(
        *(takeovers.take_over(c.mailbox_id, c.owner, uuid.uuid4(), until) for c in claimed), return_exceptions=True
    )
    assert [type(error) for error in ended] == [asyncpg.InterfaceError] * 3  # the pool is closed
    assert {row[0] for row in await fetch(runtime, "select lease_owner from mailboxes")} == {c.owner for c in claimed}


async def test_a_cycle_cancelled_while_waiting_leaves_the_others_their_takeovers(runtime: Runtime) -> None:
    claimed = await claims(runtime, 3)
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    owners = [uuid.uuid4() for _ in claimed]
    cycles = [
        asyncio.create_task(runtime.shared.take_over(c.mailbox_id, c.owner, o, until))
        for c, o in zip(claimed, owners, strict=True)
    ]
    await asyncio.sleep(0)  # each has asked; the statement goes at the end of this turn
    cycles[0].cancel()  # the first to ask: the statement is not its to send
    ended = await asyncio.gather(*cycles, return_exceptions=True)
    assert isinstance(ended[0], asyncio.CancelledError)
    assert [lease.owner for lease in (ended[1], ended[2]) if isinstance(lease, Lease)] == [owners[1], owners[2]]


async def test_two_processes_taking_over_the_same_claims_in_opposite_orders_never_deadlock(
    runtime: Runtime, database_url: str
) -> None:
    """Two copies of a batch (a re-enqueued one, say) on two workers: each claim is taken over once, no error."""
    claimed = await claims(runtime, 300)
    until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    async with statement_pool(database_url, max_size=1) as one, statement_pool(database_url, max_size=1) as other:
        first, second = SharedStatements(one), SharedStatements(other)
        ended = await asyncio.gather(
            *(first.take_over(c.mailbox_id, c.owner, uuid.uuid4(), until) for c in claimed),
            *(second.take_over(c.mailbox_id, c.owner, uuid.uuid4(), until) for c in reversed(claimed)),
            return_exceptions=True,
        )
    assert not [error for error in ended if isinstance(error, BaseException)]
    assert sorted(lease.mailbox_id for lease in ended if isinstance(lease, Lease)) == sorted(
        c.mailbox_id for c in claimed
    )


async def test_routine_writes_of_one_turn_go_as_one_statement_each_compared_with_its_own_lease(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed = await claims(runtime, 3)
    now = datetime.now(UTC)
    leases = [await runtime.shared.take_over(c.mailbox_id, c.owner, uuid.uuid4(), now + timedelta(minutes=1))
              for c in claimed]  # fmt: skip
    assert all(leases)
    changed = leases[1]
    assert changed is not None
    async with runtime.sessionmaker() as session, session.begin():  # e.g. an operator's action since the lease
        await session.execute(
            text("update mailboxes set revision = revision + 1 where id = :id"), {"id": changed.mailbox_id}
        )
    sent = counting(monkeypatch, runtime.statements)
    refresh = RoutineRefresh(SealedAccessToken(b"sealed", now + timedelta(hours=1)), None, "openid", now)
    written = await asyncio.gather(
        *(
            runtime.shared.write_routine(lease, lease.lifecycle(), refresh, record_outcome=True)
            for lease in leases
            if lease
        )
    )
    assert written == [True, False, True]
    assert len(sent) == 1
    rows = await fetch(
        runtime, "select id, revision, lease_owner, access_token_ciphertext, granted_scope from mailboxes order by id"
    )
    assert [(row[1], row[2] is None, row[3], row[4]) for row in rows] == [
        (1, True, b"sealed", "openid"), (1, False, None, None), (1, True, b"sealed", "openid")
    ]  # fmt: skip
    outcomes = await fetch(runtime, "select mailbox_id, outcome from refresh_outcomes order by mailbox_id")
    assert outcomes == [(claimed[0].mailbox_id, "success"), (claimed[2].mailbox_id, "success")]
