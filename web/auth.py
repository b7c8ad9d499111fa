"""Who is asking: one-time login links, server-side sessions, sign-out, the admin check and CSRF.

There is no password: `tokenwarden login-link EMAIL` prints a link. Opening it shows a one-click
confirmation; the session starts on that click (a POST), so mail scanners that prefetch links
cannot use the link up or sign in with it. The cookie carries only a signed random session id;
the session row decides whether it is still valid, so signing out really ends it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from statemachine.services.accounts import UnknownUserError, normalise_email
from statemachine.store.db import Sessionmaker
from statemachine.store.models import User
from web import store
from web.pages import PageError, context_of, render
from web.signing import SESSION_SECONDS, InvalidSignedValue, Signing, hash_secret, new_secret

_LINK_GONE = "This sign-in link has expired or was already used. Ask for a new one."


@dataclass(frozen=True)
class Auth:
    """The signed-in user of this request, with the CSRF token their forms must send back."""

    user: store.SessionUser
    csrf: str


def cookie_name(secure: bool) -> str:
    # __Host-: the browser then refuses the cookie unless it is Secure, host-only and for path /
    return "__Host-tokenwarden" if secure else "tokenwarden"


async def authenticate(request: Request) -> Auth | None:
    """The request's live session, or None; cached on the request."""
    if hasattr(request.state, "auth"):
        cached: Auth | None = request.state.auth
        return cached
    web = context_of(request)
    auth = None
    cookie = request.cookies.get(cookie_name(web.secure_cookies))
    if cookie:
        try:
            secret = web.signing.session_secret(cookie)
        except InvalidSignedValue:
            secret = None
        if secret is not None:
            async with web.runtime.sessionmaker() as session:
                user = await store.live_session(session, hash_secret(secret), datetime.now(UTC))
            auth = Auth(user, web.signing.csrf_token(secret)) if user else None
    request.state.auth = auth
    return auth


async def require_user(request: Request) -> Auth:
    auth = await authenticate(request)
    if auth is None:
        raise PageError(401, "Please sign in", "Open the sign-in link you were given to see this page.")
    return auth


async def require_admin(request: Request) -> Auth:
    auth = await require_user(request)
    if not auth.user.is_admin:
        raise PageError(403, "Operators only", "This page is for operators. Your account is not one.")
    return auth


def check_origin(request: Request) -> None:
    """Refuse a browser POST from another site (cheap; the CSRF token is the real defence)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = urlsplit(context_of(request).base_url)
    if origin != f"{own.scheme}://{own.netloc}":
        raise PageError(403, "Request refused", "This form was sent from another site, so it was ignored.")


async def checked_form(request: Request, auth: Auth) -> FormData:
    """The POSTed form, after the Origin and CSRF checks; every state-changing endpoint starts here."""
    check_origin(request)
    form = await request.form()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), auth.csrf.encode()):
        raise PageError(403, "Request refused", "The form was out of date or not sent by this site. Please try again.")
    return form


async def create_login_link(
    sessionmaker: Sessionmaker, signing: Signing, base_url: str, email: str, minutes: int
) -> str:
    """A signed, single-use sign-in link for an existing user, valid for `minutes`."""
    address = normalise_email(email, "email")
    secret = new_secret()
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        user_id = await session.scalar(select(User.id).where(User.email == address))
        if user_id is None:
            raise UnknownUserError(address)
        await store.purge_stale(session, now)
        await store.add_login_token(session, user_id, hash_secret(secret), now + timedelta(minutes=minutes))
    return f"{base_url}/login?token={signing.login_token(secret)}"


def _login_secret(signing: Signing, token: object) -> str:
    if not isinstance(token, str) or not token:
        raise PageError(400, "Sign-in link incomplete", "This link is missing its code. Copy the whole link.")
    try:
        return signing.login_secret(token)
    except InvalidSignedValue as err:
        detail = _LINK_GONE if err.expired else "This link is not valid."
        raise PageError(400, "Sign-in link not valid", detail) from None


async def login_page(request: Request) -> Response:
    """GET /login?token=...: confirm before using the link up (scanners only GET)."""
    web = context_of(request)
    token = request.query_params.get("token")
    secret = _login_secret(web.signing, token)
    async with web.runtime.sessionmaker() as session:
        user = await store.login_token_user(session, hash_secret(secret), datetime.now(UTC))
    if user is None:
        raise PageError(400, "Sign-in link not valid", _LINK_GONE)
    return render(request, "login.html", {"email": user.email, "token": token})


async def login(request: Request) -> Response:
    """POST /login: use the link up, start a session, end any session this browser had."""
    check_origin(request)
    web = context_of(request)
    secret = _login_secret(web.signing, (await request.form()).get("token"))
    previous = await authenticate(request)
    session_secret, now = new_secret(), datetime.now(UTC)
    async with web.runtime.sessionmaker() as session, session.begin():
        user_id = await store.use_login_token(session, hash_secret(secret), now)
        if user_id is None:
            raise PageError(400, "Sign-in link not valid", _LINK_GONE)
        if previous is not None:
            await store.revoke_session(session, previous.user.session_id, now)
        expires = now + timedelta(seconds=SESSION_SECONDS)
        await store.add_session(session, user_id, hash_secret(session_secret), expires)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        cookie_name(web.secure_cookies), web.signing.session_cookie(session_secret), max_age=SESSION_SECONDS,
        path="/", secure=web.secure_cookies, httponly=True, samesite="lax",
    )  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    """POST /logout: revoke the session row, so the cookie stops working everywhere at once."""
    auth = await require_user(request)
    await checked_form(request, auth)
    web = context_of(request)
    async with web.runtime.sessionmaker() as session, session.begin():
        await store.revoke_session(session, auth.user.session_id, datetime.now(UTC))
    request.state.auth = None
    response = render(request, "message.html", {"title": "Signed out", "detail": "You are signed out."})
    response.delete_cookie(cookie_name(web.secure_cookies), path="/", secure=web.secure_cookies, httponly=True)
    return response


routes = [
    Route("/login", login_page, methods=["GET"], name="login_page"),
    Route("/login", login, methods=["POST"], name="login"),
    Route("/logout", logout, methods=["POST"], name="logout"),
]
