"""GET /v1/mailboxes and GET /v1/mailboxes/{id}: what a host app shows its users about each mailbox.

The banner is the dashboard's (web/banners.py), so the host app's UI and Tokenwarden's say the same.
Pagination is by id (the cursor is the last id of the page), so pages stay stable while mailboxes are added.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.core.states import State
from statemachine.services import accounts
from statemachine.services.removal import attempt_revocation, remove_mailbox, revoke_urls
from statemachine.store.models import Mailbox, User
from statemachine.store.queries import MAILBOX_COLUMNS
from statemachine.store.repository import UnknownMailboxError
from web import reports
from web.banners import plain_reason
from web.pages import WebContext, context_of
from web.v1.auth import require_key
from web.v1.errors import ApiError, invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
STATES = tuple(s.value for s in State)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def mailbox_json(web: WebContext, row: Any, incidents: reports.OpenIncidents, now: datetime) -> dict[str, Any]:
    banner = incidents.banner(row, now)
    healthy = row.state == State.HEALTHY
    return {
        "id": row.id,
        "user_email": row.user,
        "address": row.address,
        "provider": row.provider,
        "state": row.state,
        "is_active": row.is_active,
        "reason": None if healthy else plain_reason(row.token_refresh_error, row.failure_kind),
        "banner": {"level": banner.tone, "title": banner.title, "text": banner.detail},
        "next_refresh_at": _iso(row.next_refresh_at),
        "last_refreshed_at": _iso(row.last_refreshed_at),
        "removed_at": _iso(row.removed_at),
        "reconnect_url": None if healthy else web.runtime.events.reconnect_url(row.id),
    }


def _query() -> Select[*tuple[Any, ...]]:
    return select(*MAILBOX_COLUMNS, Mailbox.removed_at).join(User, User.id == Mailbox.user_id)


async def read_mailbox(web: WebContext, session: AsyncSession, mailbox_id: int) -> dict[str, Any]:
    """The mailbox as the API shows it; 404 when there is none."""
    row = (await session.execute(_query().where(Mailbox.id == mailbox_id))).one_or_none()
    if row is None:
        raise ApiError(404, "mailbox_not_found", f"There is no mailbox {mailbox_id}.")
    return mailbox_json(web, row, await reports.open_incidents_by_provider(session), datetime.now(UTC))


def mailbox_id_of(request: Request) -> int:
    raw = request.path_params["mailbox_id"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise ApiError(404, "mailbox_not_found", "A mailbox id is a positive whole number.")
    return int(raw)


def encode_cursor(last_id: int) -> str:
    """The last id of the page: ids only grow, so the next page is "after it" however rows change meanwhile."""
    return str(last_id)


def decode_cursor(cursor: str) -> int:
    if not cursor.isascii() or not cursor.isdigit() or int(cursor) >= 2**63:
        raise invalid("cursor is not one this API returned; pass next_cursor from the previous page as it is")
    return int(cursor)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid(f"limit is a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _user_email(raw: str) -> str:
    """The filter's address as stored; a NUL (which PostgreSQL refuses: a 500) or a non-address is a 422."""
    try:
        return accounts.normalise_email(raw, "user_email")
    except accounts.InvalidInputError as err:
        raise invalid(str(err)) from None


def _filters(request: Request) -> Select[*tuple[Any, ...]]:
    params = request.query_params
    statement = _query().order_by(Mailbox.id)
    if (email := params.get("user_email")) is not None:
        statement = statement.where(User.email == _user_email(email))
    if (state := params.get("state")) is not None:
        if state not in STATES:
            raise invalid(f"state is one of: {', '.join(STATES)}")
        statement = statement.where(Mailbox.state == state)
    include_removed = params.get("include_removed", "false")
    if include_removed not in ("true", "false"):
        raise invalid("include_removed is true or false")
    if include_removed == "false":
        statement = statement.where(Mailbox.removed_at.is_(None))
    if (cursor := params.get("cursor")) is not None:
        statement = statement.where(Mailbox.id > decode_cursor(cursor))
    return statement


async def list_mailboxes(request: Request) -> Response:
    await require_key(request)
    limit = _limit(request.query_params.get("limit"))
    statement = _filters(request).limit(limit + 1)
    web = context_of(request)
    async with web.runtime.sessionmaker() as session:
        rows = list(await session.execute(statement))
        incidents = await reports.open_incidents_by_provider(session)
    now = datetime.now(UTC)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
    return JSONResponse({"data": [mailbox_json(web, r, incidents, now) for r in page], "next_cursor": next_cursor})


async def get_mailbox(request: Request) -> Response:
    await require_key(request)
    mailbox_id = mailbox_id_of(request)
    web = context_of(request)
    async with web.runtime.sessionmaker() as session:
        return JSONResponse(await read_mailbox(web, session, mailbox_id))


async def delete_mailbox(request: Request) -> Response:
    """The host's user removed the mailbox: revoke the grant (now, or from the worker until it works), keep history."""
    holder = await require_key(request)
    mailbox_id = mailbox_id_of(request)
    runtime = context_of(request).runtime
    try:
        revocation_id = await remove_mailbox(
            runtime.sessionmaker, runtime.events, revoke_urls(runtime.settings), mailbox_id,
            actor=f"api-key:{holder.name}", now=datetime.now(UTC),
        )  # fmt: skip
    except UnknownMailboxError:
        raise ApiError(404, "mailbox_not_found", f"There is no mailbox {mailbox_id}.") from None
    if revocation_id is not None:  # a failure here is retried by the worker: the request does not wait for it
        await attempt_revocation(
            runtime.sessionmaker, runtime.http, runtime.cipher, runtime.settings, revocation_id, datetime.now(UTC)
        )
    return Response(status_code=204)


routes = [
    Route("/v1/mailboxes", list_mailboxes, methods=["GET"]),
    Route("/v1/mailboxes/{mailbox_id}", get_mailbox, methods=["GET"]),
    Route("/v1/mailboxes/{mailbox_id}", delete_mailbox, methods=["DELETE"]),
]
