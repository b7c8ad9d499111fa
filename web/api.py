"""JSON for scripts, with the pages' rules: a user reads their own mailboxes, an operator reads any.

The shapes are statemachine.store.queries' (the CLI's `--json`), so one script works against both.
`/api/mailboxes` lists the caller's own; operators add `?all=1` for every mailbox (and `state=`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.core.states import State
from statemachine.store import queries
from web import reports
from web.auth import Auth, require_admin, require_user
from web.pages import PageError, context_of


async def _readable(request: Request, auth: Auth, mailbox_id: int) -> None:
    """404 unless the mailbox is the caller's own, or the caller is an operator and it exists."""
    async with context_of(request).runtime.sessionmaker() as session:
        owner = await reports.mailbox_owner(session, mailbox_id)
    if owner is None or (owner != auth.user.user_id and not auth.user.is_admin):
        raise PageError(404, "Not found", f"no mailbox {mailbox_id}")


async def mailboxes(request: Request) -> Response:
    auth = await require_user(request)
    everyone = request.query_params.get("all") in {"1", "true"}
    if everyone and not auth.user.is_admin:
        raise PageError(403, "Forbidden", "all=1 is for operators")
    state = request.query_params.get("state")
    if state is not None and state not in {s.value for s in State}:
        raise PageError(400, "Bad request", f"state must be one of: {', '.join(s.value for s in State)}")
    async with context_of(request).runtime.sessionmaker() as session:
        if everyone:
            rows = await queries.list_mailboxes(session, state)
        else:
            rows = [queries.json_row(row) for row in await reports.owned_mailboxes(session, auth.user.user_id)]
            rows = [row for row in rows if state is None or row["state"] == state]
    return JSONResponse({"mailboxes": rows})


async def mailbox(request: Request) -> Response:
    auth = await require_user(request)
    mailbox_id: int = request.path_params["mailbox_id"]
    await _readable(request, auth, mailbox_id)
    async with context_of(request).runtime.sessionmaker() as session:
        return JSONResponse(await queries.show_mailbox(session, mailbox_id))


async def history(request: Request) -> Response:
    auth = await require_user(request)
    mailbox_id: int = request.path_params["mailbox_id"]
    await _readable(request, auth, mailbox_id)
    async with context_of(request).runtime.sessionmaker() as session:
        return JSONResponse({"mailbox_id": mailbox_id, "history": await queries.history(session, mailbox_id)})


async def ops_summary(request: Request) -> Response:
    """GET /api/ops/summary (operators): what /ops shows above its list."""
    await require_admin(request)
    async with context_of(request).runtime.sessionmaker() as session:
        counts = await reports.counts(session)
        rate = await reports.success_rate(session, datetime.now(UTC))
        incidents = await reports.open_incidents(session)
    return JSONResponse({"counts": counts, "success_rate_24h": rate, "open_incidents": incidents})


routes = [
    Route("/api/mailboxes", mailboxes, methods=["GET"]),
    Route("/api/mailboxes/{mailbox_id:id}", mailbox, methods=["GET"]),
    Route("/api/mailboxes/{mailbox_id:id}/history", history, methods=["GET"]),
    Route("/api/ops/summary", ops_summary, methods=["GET"]),
]
