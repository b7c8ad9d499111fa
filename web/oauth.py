"""Reconnect: POST /mailboxes/{id}/reconnect sends the user to the provider; /auth/<provider>/callback finishes.

Authorization code flow with PKCE S256. The `state` is signed, expires after 10 minutes and names a
server-side row bound to this session and this mailbox, used up on the first callback. Each
provider has its own callback path (RFC 9700 §2.1, mix-up attacks). The exchange result goes to
`statemachine.services.reconnect.complete_reconnect`, which stores the grant and fires `reconnected` under the
row lock, or records `reconnect_rejected` for another account. Every failure ends on a page that
says what happened; none of them changes the mailbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from statemachine.core.errors import OAuthError
from statemachine.core.states import FailureKind
from statemachine.mail.emails import provider_display_name
from statemachine.providers.oauth import OAuthProvider, TokenGrant, new_pkce_pair
from statemachine.services.reconnect import ReconnectError, ReconnectResult, complete_reconnect
from statemachine.store.repository import UnknownMailboxError
from web import reports, store
from web.auth import Auth, checked_form, require_user
from web.pages import PageError, WebContext, context_of
from web.signing import STATE_SECONDS, InvalidSignedValue, hash_secret, new_secret

RECONNECTS = Counter("tokenwarden_web_reconnects_total", "Reconnects finished in the web app", ["provider", "outcome"])
_STATE_PROBLEMS = {
    "missing": "The answer from the provider did not say which reconnect it belongs to.",
    "invalid": "The answer from the provider was altered or is not one of ours.",
    "expired": "This reconnect took longer than 10 minutes and has expired.",
    "unknown": "This reconnect is not one we started.",
    "used": "This reconnect was already finished (the page was probably reloaded or opened twice).",
    "other_session": "This reconnect was started in another browser or before you signed in again.",
}


def not_found() -> PageError:
    return PageError(404, "Mailbox not found", "There is no such mailbox in your account.")


def redirect_uri(web: WebContext, provider: str) -> str:
    return f"{web.base_url}/auth/{provider}/callback"


def provider_of(web: WebContext, name: str) -> OAuthProvider:
    provider = web.runtime.providers.get(name)  # only registered providers with client credentials are there
    if provider is None:
        detail = f"{provider_display_name(name)} is not set up on this server. Tell an operator."
        raise PageError(503, "Reconnecting is not available", detail)
    return provider


async def start_reconnect(request: Request) -> Response:
    """POST /mailboxes/{id}/reconnect: record a state, then redirect to the provider's consent page."""
    auth = await require_user(request)
    await checked_form(request, auth)
    web = context_of(request)
    mailbox_id: int = request.path_params["mailbox_id"]
    verifier, challenge = new_pkce_pair()
    nonce, now = new_secret(), datetime.now(UTC)
    async with web.runtime.sessionmaker() as session, session.begin():
        found = await reports.mailbox_provider(session, mailbox_id, auth.user.user_id)
        if found is None:
            raise not_found()
        name, address = found
        provider = provider_of(web, name)
        sealed = web.runtime.cipher.encrypt(verifier, mailbox_id=mailbox_id, role="pkce")
        expires = now + timedelta(seconds=STATE_SECONDS)
        await store.add_state(session, hash_secret(nonce), auth.user.session_id, mailbox_id, name, sealed, expires)
    url = provider.authorization_url(
        redirect_uri=redirect_uri(web, name), state=web.signing.state(nonce), code_challenge=challenge,
        scopes=provider.scopes, login_hint=address,
    )  # fmt: skip
    return RedirectResponse(url, status_code=303)


async def reconnect_link(request: Request) -> Response:
    """GET /mailboxes/{id}/reconnect, the emails' "Reconnect now" link: to the mailbox's card on the dashboard,
    whose Reconnect button starts the flow. A GET never starts it (mail scanners follow links)."""
    return RedirectResponse(f"/#mailbox-{request.path_params['mailbox_id']}", status_code=303)


def _state_error(problem: str) -> PageError:
    return PageError(400, "Reconnect not finished", f"{_STATE_PROBLEMS[problem]} Nothing was changed. Try again.")


async def _use_state(web: WebContext, request: Request, auth: Auth, provider: str) -> store.PendingState:
    """Check the signed `state` and use up its row; any problem ends on a page naming it."""
    state = request.query_params.get("state")
    if not state:
        raise _state_error("missing")
    try:
        nonce = web.signing.state_nonce(state)
    except InvalidSignedValue as err:
        raise _state_error("expired" if err.expired else "invalid") from None
    now, state_hash = datetime.now(UTC), hash_secret(nonce)
    async with web.runtime.sessionmaker() as session, session.begin():
        pending = await store.use_state(session, state_hash, auth.user.session_id, provider, now)
        if pending is None:
            raise _state_error(await store.state_problem(session, state_hash, auth.user.session_id, provider, now))
    return pending


async def exchange(web: WebContext, request: Request, name: str, verifier: str) -> TokenGrant:
    """The provider's answer on our callback, exchanged for a grant; any problem ends on a page (PageError)."""
    label = provider_display_name(name)
    params = request.query_params
    if params.get("error") == "access_denied":
        raise PageError(400, "Access not allowed", f"You did not allow access at {label}, so nothing was changed.")
    if params.get("error") or not params.get("code"):
        raise PageError(400, "Reconnect not finished", f"{label} did not complete the sign-in. Nothing was changed.")
    try:
        return await provider_of(web, name).exchange_code(
            code=params["code"], redirect_uri=redirect_uri(web, name), code_verifier=verifier
        )
    except OAuthError as err:
        if err.verdict.kind is FailureKind.TRANSIENT:
            detail = f"{label} could not be reached or had a temporary problem. Nothing was changed; try again soon."
        else:
            detail = f"{label} did not accept the sign-in. Nothing was changed; press Reconnect to start again."
        raise PageError(502, "Reconnect failed", detail) from None


async def _finish(web: WebContext, auth: Auth, mailbox_id: int, grant: TokenGrant) -> ReconnectResult:
    runtime = web.runtime
    try:
        return await complete_reconnect(
            runtime.sessionmaker, runtime.cipher, runtime.events, mailbox_id, auth.user.user_id, grant,
            f"user:{auth.user.email}",
        )  # fmt: skip
    except UnknownMailboxError:
        raise not_found() from None
    except ReconnectError as err:
        raise PageError(502, "Reconnect failed", f"{err} Nothing was changed.") from None


async def reconnect_callback(request: Request, name: str) -> Response:
    """The provider's redirect back for a reconnect started from the dashboard (web/connect.py dispatches)."""
    auth = await require_user(request)
    web = context_of(request)
    try:
        pending = await _use_state(web, request, auth, name)
        verifier = web.runtime.cipher.decrypt(pending.verifier_ciphertext, mailbox_id=pending.mailbox_id, role="pkce")
        grant = await exchange(web, request, name, verifier)
        result = await _finish(web, auth, pending.mailbox_id, grant)
    except PageError as err:
        RECONNECTS.labels(name, f"failed_{err.status_code}").inc()
        raise
    label = provider_display_name(name)
    if result.unknown_account:
        RECONNECTS.labels(name, "account_unknown").inc()
        detail = (f"{result.expected_account} was added without signing in, and {label} has not yet told us "
                  f"which account it belongs to (it does at the mailbox's first successful refresh). A {label} "
                  "email address cannot prove it, so nothing was changed. Ask an operator to refresh the mailbox "
                  "once, or to add it again through a sign-in.")  # fmt: skip
        raise PageError(409, "We cannot tell which account this mailbox belongs to yet", detail)
    if not result.accepted:
        RECONNECTS.labels(name, "other_account").inc()
        await provider_of(web, name).revoke(grant.refresh_token or grant.access_token)  # never meant to be given
        other = grant.email or "a different account"
        detail = (f"You signed in to {label} as {other}, but this mailbox is {result.expected_account}. "
                  f"Nothing was changed. Press Reconnect again and choose {result.expected_account}.")  # fmt: skip
        raise PageError(403, "That was a different account", detail)
    RECONNECTS.labels(name, "reconnected").inc()
    async with web.runtime.sessionmaker() as session, session.begin():
        text = f"{label} reconnected: {result.expected_account} is working again."
        await store.set_flash(session, auth.user.session_id, "success", text)
    return RedirectResponse("/", status_code=303)


routes = [
    Route("/mailboxes/{mailbox_id:id}/reconnect", start_reconnect, methods=["POST"], name="reconnect"),
    Route("/mailboxes/{mailbox_id:id}/reconnect", reconnect_link, methods=["GET"], name="reconnect_link"),
]
