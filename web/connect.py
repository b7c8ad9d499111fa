"""Connecting a mailbox through a connect session's single-use link, and the providers' callback.

GET /connect/{secret} uses the link up and sends the browser to the provider's consent (PKCE S256, a
signed single-use `state` bound to this connect session — never to a dashboard session: opening a link
signs nobody in, so an API key cannot be turned into a sign-in). GET /auth/<provider>/callback finishes
a connect session, or else a dashboard reconnect (web/oauth.py), whose exchange code both share. POST
/connect is the dashboard's "Connect a Gmail mailbox" button: a connect session for the signed-in user.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from statemachine.providers import registry
from statemachine.providers.oauth import new_pkce_pair
from statemachine.services.connect import Connected, connect_mailbox
from statemachine.services.reconnect import ReconnectError
from statemachine.store.models import Mailbox, User
from statemachine.store.repository import UnknownMailboxError
from web import connect_sessions
from web.auth import checked_form, require_user
from web.oauth import exchange, provider_of, reconnect_callback, redirect_uri
from web.pages import PageError, WebContext, context_of
from web.signing import InvalidSignedValue, hash_secret, new_secret
from web.tables import ConnectSession

PKCE_ROLE = "pkce-connect"
_USED = "This connect link was already opened. Ask the app that sent you here for a new one; nothing was changed."
_EXPIRED = "This connect link has expired. Ask the app that sent you here for a new one; nothing was changed."


async def start_session(
    web: WebContext, *, user_id: int, provider: str, return_url: str, mailbox_id: int | None = None,
    login_hint: str | None = None,
) -> tuple[ConnectSession, str]:  # fmt: skip
    """A new connect session and its link (the link's secret is only ever in the returned URL)."""
    secret = new_secret()
    async with web.runtime.sessionmaker() as session, session.begin():
        row = await connect_sessions.create(
            session, link_hash=hash_secret(secret), user_id=user_id, provider=provider, return_url=return_url,
            mailbox_id=mailbox_id, login_hint=login_hint, now=datetime.now(UTC),
        )  # fmt: skip
    return row, f"{web.base_url}/connect/{secret}"


async def open_link(request: Request) -> Response:
    """GET /connect/{secret}: single use; then to the provider's consent page."""
    web = context_of(request)
    verifier, challenge = new_pkce_pair()
    nonce, now = new_secret(), datetime.now(UTC)
    async with web.runtime.sessionmaker() as session, session.begin():
        row = await connect_sessions.lock_by(
            session, ConnectSession.link_hash, hash_secret(request.path_params["secret"])
        )
        if row is None:
            raise PageError(404, "Link not found", "This connect link is not one of ours.")
        problem = _EXPIRED if row.expires_at <= now else _USED if row.opened_at is not None else None
        if problem is None:
            provider = provider_of(web, row.provider)
            row.opened_at, row.status, row.state_hash = now, "opened", hash_secret(nonce)
            row.verifier_ciphertext = web.runtime.cipher.encrypt(verifier, mailbox_id=row.id, role=PKCE_ROLE)
            hint = row.login_hint or await _address(session, row.mailbox_id)
        elif row.status == "pending":
            connect_sessions.finish(row, "expired", None, now)  # committed: the host app reads it
    if problem is not None:
        raise PageError(400, "Connect link not valid", problem)
    url = provider.authorization_url(
        redirect_uri=redirect_uri(web, row.provider), state=web.signing.state(nonce), code_challenge=challenge,
        scopes=provider.scopes, login_hint=hint,
    )  # fmt: skip
    return RedirectResponse(url, status_code=303)


async def _address(session: AsyncSession, mailbox_id: int | None) -> str | None:
    return None if mailbox_id is None else await session.scalar(select(Mailbox.address).where(Mailbox.id == mailbox_id))


async def _connect_row(web: WebContext, request: Request) -> int | None:
    """The id of the connect session whose `state` this callback carries; None when it is not a connect session's."""
    try:
        nonce = web.signing.state_nonce(request.query_params.get("state") or "")
    except InvalidSignedValue:
        return None
    async with web.runtime.sessionmaker() as session:
        statement = select(ConnectSession.id).where(ConnectSession.state_hash == hash_secret(nonce))
        return await session.scalar(statement)


async def _take_consent(web: WebContext, row_id: int, name: str) -> tuple[ConnectSession, str, str]:
    """Use the session's `state` up (single use): the row, its user's email and the PKCE verifier."""
    async with web.runtime.sessionmaker() as session, session.begin():
        row = await session.get(ConnectSession, row_id, with_for_update=True)
        assert row is not None
        if row.status != "opened" or row.provider != name or row.verifier_ciphertext is None:
            raise PageError(400, "Connect not finished", "This consent was already used. Nothing was changed.")
        row.status = "consented"
        verifier = web.runtime.cipher.decrypt(row.verifier_ciphertext, mailbox_id=row.id, role=PKCE_ROLE)
        email = await session.scalar(select(User.email).where(User.id == row.user_id))
        assert email is not None
        session.expunge(row)
    return row, email, verifier


async def _connect(web: WebContext, request: Request, row: ConnectSession, email: str, verifier: str) -> Connected:
    """The outcome; `denied` and `failed` store nothing."""
    try:
        grant = await exchange(web, request, row.provider, verifier)
    except PageError:
        return Connected("denied" if request.query_params.get("error") == "access_denied" else "failed", 0)
    runtime = web.runtime
    try:
        result = await connect_mailbox(
            runtime.sessionmaker, runtime.cipher, runtime.events, user_id=row.user_id, user_email=email,
            provider=row.provider, grant=grant, actor=f"connect:{row.public_id}", mailbox_id=row.mailbox_id,
        )  # fmt: skip
    except (ReconnectError, UnknownMailboxError):
        return Connected("failed", 0)
    if result.status == "rejected":  # another account's grant: the user never meant to give it
        await provider_of(web, row.provider).revoke(grant.refresh_token or grant.access_token)
    return result


async def _finish_connect(web: WebContext, request: Request, row_id: int, name: str) -> Response:
    row, email, verifier = await _take_consent(web, row_id, name)
    result = await _connect(web, request, row, email, verifier)
    mailbox_id = result.mailbox_id or None
    async with web.runtime.sessionmaker() as session, session.begin():
        locked = await session.get(ConnectSession, row_id, with_for_update=True)
        assert locked is not None
        connect_sessions.finish(locked, result.status, mailbox_id, datetime.now(UTC))
    target = connect_sessions.with_result(row.return_url, session_id=row.public_id, status=result.status,
                                          mailbox_id=mailbox_id)  # fmt: skip
    return RedirectResponse(target, status_code=303)


def callback_for(name: str) -> Callable[[Request], Awaitable[Response]]:
    """GET /auth/{name}/callback: the provider's redirect back, with `code` and `state` (or `error`), finishing a
    connect session or else a dashboard reconnect.

    A route per provider rather than one route with a path parameter: the path itself says which provider
    answered, so a state started at one provider cannot be finished by another's answer.
    """

    async def callback(request: Request) -> Response:
        web = context_of(request)
        row_id = await _connect_row(web, request)
        if row_id is None:
            return await reconnect_callback(request, name)
        return await _finish_connect(web, request, row_id, name)

    callback.__name__ = f"{name}_callback"
    return callback


async def connect_button(request: Request) -> Response:
    """POST /connect: the dashboard's "Connect a Gmail mailbox" (or another provider's, named by the form's
    `provider`): a connect session that comes back to the dashboard."""
    auth = await require_user(request)
    form = await checked_form(request, auth)
    web = context_of(request)
    name = form.get("provider")
    if not isinstance(name, str) or registry.find(name) is None:
        raise PageError(400, "Request refused", "The form did not name a provider this server knows.")
    provider_of(web, name)  # a clear page now when the provider is not set up, rather than after the link
    _, link = await start_session(web, user_id=auth.user.user_id, provider=name, return_url=f"{web.base_url}/")
    return RedirectResponse(link, status_code=303)


routes = [
    Route("/connect", connect_button, methods=["POST"], name="connect"),
    Route("/connect/{secret}", open_link, methods=["GET"], name="connect_link"),
    *(
        Route(f"/auth/{name}/callback", callback_for(name), methods=["GET"], name=f"{name}_callback")
        for name in registry.NAMES
    ),
]
