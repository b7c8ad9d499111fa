"""POST /token: the refresh and authorization-code grants, after any injected fault.

Why: this is the endpoint the worker calls on every cycle; it counts each request so tests and the
demo can see what the service did, and applies faults before the grant so every failure mode is reachable.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from devkit.sandbox.dialect import Dialect, sandbox_dialect
from devkit.sandbox.responses import form_field
from devkit.sandbox.state import FaultMode, SandboxState, pkce_challenge, sandbox_state


def _client_credentials(form: FormData, headers: Mapping[str, str]) -> tuple[str, str]:
    """client_secret_basic (Authorization header) or client_secret_post (form), as both providers accept."""
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return "", ""
        return unquote_plus(user), unquote_plus(password)
    return form_field(form, "client_id"), form_field(form, "client_secret")


async def _stall(request: Request, seconds: float) -> Response | None:
    """Hang like a stuck provider, then let the request go on; stop early, changing nothing, if the client hangs up."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))
        if await request.is_disconnected():
            return Response(status_code=504)  # nobody reads it
    return None


def _refresh_grant(state: SandboxState, dialect: Dialect, form: FormData) -> Response:
    token = form_field(form, "refresh_token")
    if not token:
        return dialect.refuse("missing_refresh_token")
    grant = state.grants.get(token)
    if grant is None:
        state.replay_detected(token)  # strict rotation: a retired token sent again ends its grant
        return dialect.refuse("unknown_refresh_token")
    if grant.rotate or dialect.rotates:
        grant = state.rotate(grant, keep_old=dialect.rotates)
        body: dict[str, Any] = {"refresh_token": grant.refresh_token}
    else:
        body = {}
    body |= {"access_token": state.issue_access_token(grant), "expires_in": state.access_token_lifetime}
    body |= {"scope": grant.scope, "token_type": "Bearer"}
    account = state.accounts.get(grant.sub)
    if account is not None and "openid" in grant.scope.split():
        body["id_token"] = dialect.id_token(state.client_id, account, None)
    return dialect.success(body)


def _code_grant(state: SandboxState, dialect: Dialect, form: FormData) -> Response:
    code = state.redeem_code(form_field(form, "code"))
    if code is None or code.client_id != state.client_id:
        return dialect.refuse("bad_code")
    if form_field(form, "redirect_uri") != code.redirect_uri:
        return dialect.refuse("redirect_mismatch")
    verifier = form_field(form, "code_verifier")
    if not verifier:
        return dialect.refuse("missing_verifier")
    if not hmac.compare_digest(pkce_challenge(verifier), code.code_challenge):
        return dialect.refuse("bad_verifier")
    account = state.accounts.get(code.sub)
    if account is None:  # the sandbox was reset between consent and exchange
        return dialect.refuse("bad_code")
    grant = state.add_grant(account.sub, scope=code.scope)
    body = {
        "access_token": state.issue_access_token(grant),
        "expires_in": state.access_token_lifetime,
        "refresh_token": grant.refresh_token,
        "scope": grant.scope,
        "token_type": "Bearer",
        "id_token": dialect.id_token(state.client_id, account, code.nonce),
    }
    return dialect.success(body)


def _grant(state: SandboxState, dialect: Dialect, form: FormData, headers: Mapping[str, str]) -> Response:
    client_id, client_secret = _client_credentials(form, headers)
    if not client_id:
        return dialect.refuse("missing_client")
    if not state.client_matches(client_id, client_secret):
        return dialect.refuse("invalid_client")
    grant_type = form_field(form, "grant_type")
    if grant_type == "refresh_token":
        return _refresh_grant(state, dialect, form)
    if grant_type == "authorization_code":
        return _code_grant(state, dialect, form)
    return dialect.refuse("unsupported_grant_type")


async def token_endpoint(request: Request) -> Response:
    """Counts the request, applies any fault, then answers the grant in the provider's dialect."""
    state, dialect = sandbox_state(request.app), sandbox_dialect(request.app)
    form = await request.form()
    grant_type = form_field(form, "grant_type")
    refresh_token = form_field(form, "refresh_token") if grant_type == "refresh_token" else None
    state.count_request(grant_type, refresh_token)
    fault = state.take_fault(refresh_token)
    if fault is not None and fault.mode is FaultMode.TIMEOUT:
        if (hung_up := await _stall(request, fault.seconds)) is not None:
            return hung_up
    elif fault is not None:
        return dialect.faults[fault.mode](fault)
    return _grant(state, dialect, form, request.headers)
