"""Operator pages (admin only): the fleet at a glance, a filterable mailbox list, and one mailbox's story.

"Why was this mailbox disconnected, and when?" is answered by /ops/mailboxes/{id}: every history row
(event, from -> to, reason, actor, time) and every email the outbox holds for it. The two actions
are events like any other, recorded with `operator:<email>` as the actor; "retry now" only makes
the mailbox due, the worker's next scan refreshes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from statemachine.core.machine import InvalidEventError
from statemachine.core.states import Event, State
from statemachine.providers import registry
from statemachine.services.operations import operator_action
from statemachine.store import counts as mailbox_counts, queries
from statemachine.store.repository import UnknownMailboxError
from web import charts, reports, store
from web.auth import checked_form, require_admin
from web.pages import PageError, context_of, render, text_field

MAX_NOTE_LENGTH = 500
MAX_PAGE = 100_000
ACTIONS = {
    "retry-now": (Event.OPS_RETRY_NOW, "Retry scheduled: the worker will try this mailbox at its next scan."),
    "disconnect": (Event.OPS_DISCONNECT, "Disconnected. The owner sees the red banner and can reconnect."),
}


def mailbox_filter(params: Any) -> reports.MailboxFilter:
    """The list's filters from the query string; unknown values are ignored rather than guessed at."""
    state = params.get("state")
    provider = params.get("provider")
    failing = params.get("failing")
    page = str(params.get("page") or "1")[:8]
    return reports.MailboxFilter(
        state=state if state in {s.value for s in State} else None,
        provider=provider if provider in registry.NAMES else None,
        search=text_field(params.get("q"), "search", 200),
        failing_for=failing if failing in reports.FAILING_FOR else None,
        page=int(page) if page.isascii() and page.isdigit() and 0 < int(page) <= MAX_PAGE else 1,
    )


def pivot(counts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{provider: {state: mailboxes, ..., "total": n}} with every state present."""
    table: dict[str, dict[str, int]] = {}
    for row in counts:
        cells = table.setdefault(row["provider"], {s.value: 0 for s in State} | {"total": 0})
        cells[row["state"]] += row["mailboxes"]
        cells["total"] += row["mailboxes"]
    return table


async def last_day(session: AsyncSession, now: datetime) -> dict[str, charts.Chart]:
    """The overview's two charts of the last 24 hours: cycles by outcome (with incidents), mailboxes by state."""
    hours = charts.hour_starts(now)
    cycles = await reports.cycles_by_hour(session, hours[0])
    incidents = await reports.incidents_since(session, hours[0])
    states = charts.states_by_hour(
        await mailbox_counts.by_state(session),
        await reports.state_changes_by_hour(session, hours[0]),
        await reports.created_by_hour(session, hours[0]),
        hours,
    )
    return {"cycles": charts.cycles_chart(now, cycles, incidents), "states": charts.states_chart(now, states)}


def timeline(mailbox: dict[str, Any], history: list[dict[str, Any]], now: datetime) -> charts.Chart:
    """The mailbox's states over its life, from the JSON-ready rows (ISO times) the page also lists."""
    rows = [{**row, "at": datetime.fromisoformat(row["at"])} for row in history]
    return charts.timeline_chart(datetime.fromisoformat(mailbox["created_at"]), rows, mailbox["state"], now)


async def overview(request: Request) -> Response:
    """GET /ops: counts, the 24 h success rate, open incidents and the filtered mailbox list."""
    await require_admin(request)
    wanted = mailbox_filter(request.query_params)
    now = datetime.now(UTC)
    async with context_of(request).runtime.sessionmaker() as session:
        counts = await reports.counts(session)
        rate = await reports.success_rate(session, now)
        incidents = await reports.open_incidents(session)
        mailboxes, matching = await reports.filtered_mailboxes(session, wanted, now, reports.LIST_LIMIT)
        day = await last_day(session, now)
    first = (wanted.page - 1) * reports.LIST_LIMIT
    pages = {
        "first": first + 1, "last": first + len(mailboxes),
        "previous": wanted.query(wanted.page - 1) if wanted.page > 1 else None,
        "next": wanted.query(wanted.page + 1) if first + len(mailboxes) < matching else None,
    }  # fmt: skip
    context = {
        "counts": pivot(counts), "rate": rate, "incidents": incidents, "mailboxes": mailboxes, "matching": matching,
        "charts": day,
        "wanted": wanted, "states": [s.value for s in State], "providers": registry.NAMES,
        "failing": reports.FAILING_FOR, "pages": pages,
    }  # fmt: skip
    return render(request, "ops/index.html", context)


async def mailbox_page(request: Request) -> Response:
    """GET /ops/mailboxes/{id}: the mailbox, its whole history timeline and its outbox."""
    auth = await require_admin(request)
    mailbox_id: int = request.path_params["mailbox_id"]
    async with context_of(request).runtime.sessionmaker() as session, session.begin():
        try:
            mailbox = await queries.show_mailbox(session, mailbox_id)
        except UnknownMailboxError:
            raise PageError(404, "Mailbox not found", f"There is no mailbox {mailbox_id}.") from None
        history = await queries.history(session, mailbox_id)
        outbox = await queries.outbox(session, mailbox_id)
        flash = await store.take_flash(session, auth.user.session_id)
    context = {"mailbox": mailbox, "history": list(reversed(history)), "outbox": outbox, "flash": flash,
               "timeline": timeline(mailbox, history, datetime.now(UTC))}  # fmt: skip
    return render(request, "ops/mailbox.html", context)


async def action(request: Request) -> Response:
    """POST /ops/mailboxes/{id}/{retry-now|disconnect}: apply the operator's event, then back to the page."""
    auth = await require_admin(request)
    form = await checked_form(request, auth)
    mailbox_id: int = request.path_params["mailbox_id"]
    if request.path_params["action"] not in ACTIONS:
        raise PageError(404, "No such action", "Operators can retry now or disconnect.")
    event, done = ACTIONS[request.path_params["action"]]
    note = text_field(form.get("reason"), "reason", MAX_NOTE_LENGTH)
    runtime, actor = context_of(request).runtime, f"operator:{auth.user.email}"
    try:
        await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, event, actor, note)
        flash = ("success", done)
    except UnknownMailboxError:
        raise PageError(404, "Mailbox not found", f"There is no mailbox {mailbox_id}.") from None
    except InvalidEventError:
        flash = ("error", "Nothing was done: that action is not possible in the mailbox's current state.")
    async with runtime.sessionmaker() as session, session.begin():
        await store.set_flash(session, auth.user.session_id, *flash)
    return RedirectResponse(f"/ops/mailboxes/{mailbox_id}", status_code=303)


routes = [
    Route("/ops", overview, methods=["GET"], name="ops"),
    Route("/ops/mailboxes/{mailbox_id:id}", mailbox_page, methods=["GET"], name="ops_mailbox"),
    Route("/ops/mailboxes/{mailbox_id:id}/{action:str}", action, methods=["POST"], name="ops_action"),
]
