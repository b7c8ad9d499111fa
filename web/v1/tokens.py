"""POST /v1/mailboxes/{id}/access-token and /auth-failures: the host app's sync path.

Both run refresh cycles through the worker's own code (statemachine/services/cycle.py), so a
refresh asked for by a host app has the same lease, history, emails and incident guard as a
scheduled one. Every token handed out leaves an audit row (key, mailbox, time, whether a cycle
ran), never the token.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.services.access_tokens import (
    IssuedToken,
    MailboxDisconnectedError,
    RefreshUnavailableError,
    access_token,
    record_auth_failure,
    stored_token,
)
from statemachine.services.cycle import run_cycle
from statemachine.store.repository import UnknownMailboxError
from web.pages import WebContext, context_of
from web.tables import AccessTokenAudit
from web.v1.auth import require_key, require_key_in
from web.v1.errors import ApiError
from web.v1.fast_token import issue_stored
from web.v1.keys import KeyHolder
from web.v1.mailboxes import mailbox_id_of, read_mailbox
from web.v1.requests import json_object, text, whole_number

DEFAULT_MIN_VALID_SECONDS = 300
MAX_MIN_VALID_SECONDS = 1800


def actor_of(holder: KeyHolder) -> str:
    return f"api-key:{holder.name}"


def _not_found(mailbox_id: int) -> ApiError:
    return ApiError(404, "mailbox_not_found", f"There is no mailbox {mailbox_id}.")


async def _disconnected(web: WebContext, mailbox_id: int) -> ApiError:
    async with web.runtime.sessionmaker() as session:
        mailbox = await read_mailbox(web, session, mailbox_id)
    message = "The mailbox is disconnected; its user must reconnect it (reconnect_url)."
    extra = {"reason": mailbox["reason"], "reconnect_url": mailbox["reconnect_url"]}
    return ApiError(409, "mailbox_disconnected", message, extra=extra)


async def _audit(web: WebContext, holder: KeyHolder, mailbox_id: int, issued: IssuedToken) -> None:
    async with web.runtime.sessionmaker() as session, session.begin():
        session.add(AccessTokenAudit(key_name=holder.name, mailbox_id=mailbox_id, cycle_ran=issued.cycle_ran))


async def _stored(web: WebContext, request: Request) -> tuple[KeyHolder, int, int, IssuedToken | None]:
    """Key, mailbox, min_valid_seconds and the stored token if it lasts: one transaction, audit row included."""
    async with web.runtime.sessionmaker() as session, session.begin():
        holder = await require_key_in(session, request)
        mailbox_id = mailbox_id_of(request)
        body = await json_object(request)
        min_valid = whole_number(body, "min_valid_seconds", DEFAULT_MIN_VALID_SECONDS, 0, MAX_MIN_VALID_SECONDS)
        issued = await stored_token(
            session, web.runtime.cipher, mailbox_id, min_valid_seconds=min_valid, now=datetime.now(UTC)
        )
        if issued is not None:
            session.add(AccessTokenAudit(key_name=holder.name, mailbox_id=mailbox_id, cycle_ran=False))
    return holder, mailbox_id, min_valid, issued


async def issue_access_token(request: Request) -> Response:
    """The stored token in one statement when it lasts (fast_token.py); else one transaction that re-checks
    everything and, when the token does not last, the worker's cycle through `access_token`."""
    web = context_of(request)
    settings = web.runtime.settings
    fast = await issue_stored(
        request,
        web.runtime.statements,
        web.runtime.cipher,
        default=DEFAULT_MIN_VALID_SECONDS,
        high=MAX_MIN_VALID_SECONDS,
    )
    if fast is not None:
        return JSONResponse(fast)
    try:
        holder, mailbox_id, min_valid, issued = await _stored(web, request)
        if issued is None:
            issued = await access_token(
                web.runtime.cycle_deps(), mailbox_id, min_valid_seconds=min_valid, actor=actor_of(holder),
                wait_seconds=2 * settings.http_timeout_seconds,
            )  # fmt: skip
            await _audit(web, holder, mailbox_id, issued)
    except UnknownMailboxError as err:
        raise _not_found(err.mailbox_id) from None
    except MailboxDisconnectedError as err:
        raise await _disconnected(web, err.mailbox_id) from None
    except RefreshUnavailableError as err:
        message = "No valid access token can be had right now; the refresh is retried automatically."
        raise ApiError(503, "refresh_failed", message, headers={"retry-after": str(err.retry_after)}) from None
    expires_at = issued.expires_at.isoformat() if issued.expires_at else None
    return JSONResponse({"access_token": issued.access_token, "expires_at": expires_at, "scope": issued.scope})


async def report_auth_failure(request: Request) -> Response:
    """A refresh cycle now, at most one per mailbox per TOKENWARDEN_AUTH_FAILURE_MIN_INTERVAL_SECONDS."""
    holder = await require_key(request)
    mailbox_id = mailbox_id_of(request)
    body = await json_object(request)
    status = whole_number(body, "status", 401, 400, 599)
    detail = text(body, "detail", max_length=2000) or ""
    web = context_of(request)
    deps = web.runtime.cycle_deps()
    try:
        may_refresh = await record_auth_failure(
            deps, mailbox_id, actor=actor_of(holder), status=status, detail=detail,
            min_interval_seconds=web.runtime.settings.auth_failure_min_interval_seconds,
        )  # fmt: skip
    except UnknownMailboxError:
        raise _not_found(mailbox_id) from None
    if may_refresh:
        await run_cycle(deps, mailbox_id, actor=actor_of(holder))
    async with web.runtime.sessionmaker() as session:
        return JSONResponse(await read_mailbox(web, session, mailbox_id))


routes = [
    Route("/v1/mailboxes/{mailbox_id}/access-token", issue_access_token, methods=["POST"]),
    Route("/v1/mailboxes/{mailbox_id}/auth-failures", report_auth_failure, methods=["POST"]),
]
