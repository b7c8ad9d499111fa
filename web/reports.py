"""Read queries behind the dashboard, the operator pages and the API (no token column is ever selected).

Incidents are read straight from their table: the web needs only "which providers have an open incident",
not the worker's incident logic. Refresh outcomes are read from their per-minute rollup plus the few raw
minutes after it (store/outcome_minutes.py), not from a day of raw rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.incident_rules import Cause, holds
from statemachine.store import counts as mailbox_counts, outcome_minutes
from statemachine.store.models import Incident, Mailbox, StateTransition
from statemachine.store.queries import json_row, mailboxes_with_owner
from web.banners import Banner, banner_for

LIST_LIMIT = 200
FAILING_FOR = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


@dataclass(frozen=True)
class MailboxFilter:
    """The operator list's filters; None means "any"."""

    state: str | None = None
    provider: str | None = None
    search: str | None = None
    failing_for: str | None = None  # a key of FAILING_FOR
    page: int = 1  # pages of LIST_LIMIT rows, from 1

    def query(self, page: int) -> str:
        """The query string of this filter on another page, for the list's previous/next links."""
        values = {"state": self.state, "provider": self.provider, "q": self.search, "failing": self.failing_for}
        return urlencode({**{k: v for k, v in values.items() if v}, "page": page})


async def owned_mailboxes(session: AsyncSession, user_id: int) -> list[Any]:
    """The user's mailboxes, in the order they were connected."""
    return list(await session.execute(mailboxes_with_owner().where(Mailbox.user_id == user_id).order_by(Mailbox.id)))


async def mailbox_owner(session: AsyncSession, mailbox_id: int) -> int | None:
    """The owner's user id, or None when there is no such mailbox."""
    return await session.scalar(select(Mailbox.user_id).where(Mailbox.id == mailbox_id))


async def mailbox_provider(session: AsyncSession, mailbox_id: int, user_id: int) -> tuple[str, str] | None:
    """(provider, address) of the user's own mailbox; None when it is not theirs or does not exist."""
    statement = select(Mailbox.provider, Mailbox.address).where(Mailbox.id == mailbox_id, Mailbox.user_id == user_id)
    row = (await session.execute(statement)).one_or_none()
    return (row.provider, row.address) if row is not None else None


@dataclass(frozen=True)
class OpenIncidents:
    """The causes of the open incidents, by provider.

    A mailbox shows the calm "waiting for the provider" banner only while an open incident holds its last
    failure (docs/incidents.md): a revoked grant met during an outage is the user's own, and says so.
    """

    causes: dict[str, frozenset[Cause]]

    @property
    def providers(self) -> set[str]:
        return set(self.causes)

    def hold(self, provider: str, failure_kind: str | None, last_error: str | None) -> bool:
        code = (last_error or "").partition(": ")[0] or None  # errors are stored as "code: reason"
        return failure_kind is not None and any(
            holds(cause, failure_kind, code) for cause in self.causes.get(provider, ())
        )

    def banner(self, row: Any, now: datetime) -> Banner:
        """A mailbox row's banner, the same on the dashboard and in the /v1 API."""
        held = self.hold(row.provider, row.failure_kind, row.token_refresh_error)
        return banner_for(
            row.state, row.token_refresh_error, row.next_refresh_at, now,
            provider=row.provider, failure_kind=row.failure_kind, incident=held,
        )  # fmt: skip


async def open_incidents_by_provider(session: AsyncSession) -> OpenIncidents:
    rows = await session.execute(
        select(Incident.provider, Incident.kind, Incident.code).where(Incident.status == "open")
    )
    causes: dict[str, set[Cause]] = {}
    for provider, kind, code in rows:
        causes.setdefault(provider, set()).add(Cause(kind, code))
    return OpenIncidents({provider: frozenset(found) for provider, found in causes.items()})


async def open_incidents(session: AsyncSession) -> list[dict[str, Any]]:
    columns = (Incident.id, Incident.provider, Incident.cause, Incident.code, Incident.failure_ratio,
               Incident.mailboxes_affected, Incident.opened_at)  # fmt: skip
    statement = select(*columns).where(Incident.status == "open").order_by(Incident.opened_at)
    return [json_row(row) for row in await session.execute(statement)]


async def counts(session: AsyncSession) -> list[dict[str, Any]]:
    """Mailboxes per (provider, state), from the kept counts (store/counts.py), not a count of the table."""
    rows = await mailbox_counts.by_provider_and_state(session)
    return [{"provider": provider, "state": state, "mailboxes": n} for provider, state, n in rows]


async def success_rate(session: AsyncSession, now: datetime, hours: int = 24) -> dict[str, Any]:
    """Successful refresh cycles / all cycles over the last `hours`; `rate` is None when there were none.

    From the per-minute rollup (store/outcome_minutes.py): the minute `hours` ago is counted whole.
    """
    table = await outcome_minutes.cycles_by_hour(session, now - timedelta(hours=hours))
    ok = sum(outcomes.get("success", 0) for outcomes in table.values())
    total = sum(sum(outcomes.values()) for outcomes in table.values())
    return {"hours": hours, "succeeded": ok, "cycles": total, "rate": ok / total if total else None, "target": 0.95}


def _hour(column: Any) -> Any:
    return func.date_trunc("hour", column, "UTC")


async def cycles_by_hour(session: AsyncSession, since: datetime) -> dict[datetime, dict[str, int]]:
    """{hour: {outcome: cycles}} since `since`, an hour's start (the rollup and the outcomes keep 48 h)."""
    return await outcome_minutes.cycles_by_hour(session, since)


async def incidents_since(session: AsyncSession, since: datetime) -> list[dict[str, Any]]:
    """Incidents open at any moment since `since`, oldest first (closed_at None: still open)."""
    columns = (Incident.provider, Incident.cause, Incident.opened_at, Incident.closed_at)
    statement = select(*columns).where((Incident.closed_at.is_(None)) | (Incident.closed_at >= since))
    return [dict(row._mapping) for row in await session.execute(statement.order_by(Incident.opened_at))]


async def state_changes_by_hour(session: AsyncSession, since: datetime) -> list[tuple[datetime, str, str, int]]:
    """(hour, from_state, to_state, mailboxes) for every change of state since `since`."""
    hour, t = _hour(StateTransition.at), StateTransition
    statement = (
        select(hour, t.from_state, t.to_state, func.count())
        .where(t.at >= since, t.from_state != t.to_state)
        .group_by(hour, t.from_state, t.to_state)
    )
    return [(at, from_state, to_state, count) for at, from_state, to_state, count in await session.execute(statement)]


async def created_by_hour(session: AsyncSession, since: datetime) -> dict[datetime, int]:
    hour = _hour(Mailbox.created_at)
    statement = select(hour, func.count()).where(Mailbox.created_at >= since).group_by(hour)
    return {at: count for at, count in await session.execute(statement)}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def filtered_mailboxes(
    session: AsyncSession, wanted: MailboxFilter, now: datetime, limit: int = LIST_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """The operator list: one page of matching mailboxes, longest-failing first, and how many match in all."""
    conditions = []
    if wanted.state:
        conditions.append(Mailbox.state == wanted.state)
    if wanted.provider:
        conditions.append(Mailbox.provider == wanted.provider)
    if wanted.search:
        conditions.append(Mailbox.address.ilike(f"%{_escape_like(wanted.search.strip().lower())}%", escape="\\"))
    if wanted.failing_for in FAILING_FOR:
        conditions.append(Mailbox.token_refresh_failed_at <= now - FAILING_FOR[wanted.failing_for])
    # Two ordered reads instead of one sort of the whole table: the failing ones from the partial index
    # on the failure time, then the others in id order (the primary key); a page may span both.
    failing = Mailbox.token_refresh_failed_at
    skip = (wanted.page - 1) * limit
    first = mailboxes_with_owner().where(*conditions, failing.is_not(None)).order_by(failing, Mailbox.id)
    rows = [json_row(row) for row in await session.execute(first.offset(skip).limit(limit))]
    if len(rows) < limit and wanted.failing_for is None:
        # the failing ones ended on this page if any were on it; else count them to know where the rest starts
        failing_total = skip + len(rows) if rows else await _count(session, *conditions, failing.is_not(None))
        rest = mailboxes_with_owner().where(*conditions, failing.is_(None)).order_by(Mailbox.id)
        rest = rest.offset(max(0, skip - failing_total)).limit(limit - len(rows))
        rows += [json_row(row) for row in await session.execute(rest)]
    return rows, await _matching(session, wanted, conditions)


async def _count(session: AsyncSession, *conditions: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(Mailbox).where(*conditions)) or 0)


async def _matching(session: AsyncSession, wanted: MailboxFilter, conditions: list[Any]) -> int:
    """How many mailboxes match: from the kept counts unless a search or a failure age narrows the list."""
    if wanted.search or wanted.failing_for:
        return await _count(session, *conditions)
    return sum(
        n
        for provider, state, n in await mailbox_counts.by_provider_and_state(session)
        if wanted.state in (None, state) and wanted.provider in (None, provider)
    )
