"""POST /v1/connect-sessions and GET /v1/connect-sessions/{id}: a single-use link that connects a user's mailbox.

The redirect back to `return_url` carries `session_id`, `status` and `mailbox_id`, but a host app should
trust only what GET /v1/connect-sessions/{id} says (query parameters can be forged by anyone).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.providers import registry
from statemachine.services import accounts
from statemachine.store.models import Mailbox
from web import connect_sessions
from web.connect import start_session
from web.pages import context_of
from web.v1.auth import require_key
from web.v1.errors import ApiError, invalid
from web.v1.requests import json_object, text, whole_number


async def create(request: Request) -> Response:
    await require_key(request)
    body = await json_object(request)
    web = context_of(request)
    settings = web.runtime.settings
    try:
        email = accounts.normalise_email(body.get("user_email"), "user_email")
    except accounts.InvalidInputError as err:
        raise invalid(str(err)) from None
    provider = body.get("provider", registry.NAMES[0])  # the first registered provider (Gmail) when not named
    if provider not in web.runtime.providers:  # registered, with client credentials configured
        raise invalid(f"provider is one of: {', '.join(sorted(web.runtime.providers))}")
    return_url = text(body, "return_url", max_length=2000, required=True) or ""
    if not connect_sessions.return_url_allowed(return_url, settings.allowed_return_urls):
        raise ApiError(422, "return_url_not_allowed", "return_url is not under one of TOKENWARDEN_ALLOWED_RETURN_URLS.")
    mailbox_id = whole_number(body, "mailbox_id", 0, 0, 2**63 - 1) or None
    login_hint = text(body, "login_hint", max_length=320)
    async with web.runtime.sessionmaker() as session, session.begin():
        user_id = (await accounts.user_ids(session, {email}, create=True))[email]
        owner = await session.scalar(select(Mailbox.user_id).where(Mailbox.id == mailbox_id)) if mailbox_id else None
    if mailbox_id and owner != user_id:
        raise invalid("mailbox_id is not a mailbox of that user")
    row, url = await start_session(web, user_id=user_id, provider=str(provider), return_url=return_url,
                                   mailbox_id=mailbox_id, login_hint=login_hint)  # fmt: skip
    return JSONResponse({"id": row.public_id, "url": url, "expires_at": row.expires_at.isoformat()}, status_code=201)


async def read(request: Request) -> Response:
    await require_key(request)
    async with context_of(request).runtime.sessionmaker() as session:
        view = await connect_sessions.public_view(session, request.path_params["session_id"], datetime.now(UTC))
    if view is None:
        raise ApiError(404, "connect_session_not_found", "There is no such connect session.")
    return JSONResponse(view)


routes = [
    Route("/v1/connect-sessions", create, methods=["POST"]),
    Route("/v1/connect-sessions/{session_id}", read, methods=["GET"]),
]
