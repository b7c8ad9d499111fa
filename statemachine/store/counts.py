"""Mailboxes per (provider, state) without counting the mailboxes table (migration 0009's trigger).

Every change of a mailbox's provider or state appends signed rows to `mailbox_counts` in its own
transaction, so summing them is exact and cheap: a few rows per (provider, state) after each fold,
plus the changes since. `fold` (a worker cron) keeps that tail short.
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.db import Sessionmaker
from statemachine.store.models import MailboxCount


async def by_provider_and_state(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(provider, state, mailboxes) for every pair that has mailboxes, ordered by provider then state."""
    total = func.sum(MailboxCount.mailboxes)
    statement = (
        select(MailboxCount.provider, MailboxCount.state, total)
        .group_by(MailboxCount.provider, MailboxCount.state)
        .having(total > 0)
        .order_by(MailboxCount.provider, MailboxCount.state)
    )
    return [(provider, state, int(count)) for provider, state, count in await session.execute(statement)]


async def by_state(session: AsyncSession) -> dict[str, int]:
    table: dict[str, int] = {}
    for _, state, count in await by_provider_and_state(session):
        table[state] = table.get(state, 0) + count
    return table


async def fold(sessionmaker: Sessionmaker) -> int:
    """Replace the rows by one per (provider, state); return how many rows were folded.

    One statement: rows another fold or a concurrent change commits meanwhile are not in its
    snapshot, so they are neither deleted nor counted twice.
    """
    gone = delete(MailboxCount).returning(MailboxCount.provider, MailboxCount.state, MailboxCount.mailboxes).cte()
    total = func.sum(gone.c.mailboxes)
    sums = select(gone.c.provider, gone.c.state, total).group_by(gone.c.provider, gone.c.state).having(total != 0)
    put = insert(MailboxCount).from_select(["provider", "state", "mailboxes"], sums).cte()
    statement = select(func.count()).select_from(gone).add_cte(put)
    async with sessionmaker() as session, session.begin():
        return int(await session.scalar(statement) or 0)
