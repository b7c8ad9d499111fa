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

from devkit.sandbox.responses import (
    FAULT_RESPONSES,
    form_field,
    google_error,
    google_json,
    invalid_grant,
    make_id_token,
)
from devkit.sandbox.state import FaultMode, SandboxState, new_access_token, pkce_challenge, sandbox_state


def _client_credentials(form: FormData, headers: Mapping[str, str]) -> tuple[str, str]:
    """client_secret_basic (Authorization header) or client_secret_post (form), as Google accepts both."""
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


def _refresh_grant(state: SandboxState, form: FormData) -> Response:
    token = form_field(form, "refresh_token")
    if not token:
        return google_error(400, "invalid_request", "Missing required parameter: refresh_token")
    grant = state.grants.get(token)
    if grant is None:
        state.replay_detected(token)
        return invalid_grant()
    body: dict[str, Any] = {"access_token": new_access_token(), "expires_in": state.access_token_lifetime}
    if grant.rotate:
        grant = state.rotate(grant)
        body["refresh_token"] = grant.refresh_token
    body |= {"scope": grant.scope, "token_type": "Bearer"}
    account = state.accounts.get(grant.sub)
    if account is not None and "openid" in grant.scope.split():
        body["id_token"] = make_id_token(client_id=state.client_id, account=account)
    return google_json(body)


def _code_grant(state: SandboxState, form: FormData) -> Response:
    code = state.redeem_code(form_field(form, "code"))
    if code is None or code.client_id != state.client_id:
        return invalid_grant("Bad Request")
    if form_field(form, "redirect_uri") != code.redirect_uri:
        return google_error(400, "redirect_uri_mismatch", "Bad Request")
    verifier = form_field(form, "code_verifier")
    if not verifier:
        return invalid_grant("Missing code verifier.")
    if not hmac.compare_digest(pkce_challenge(verifier), code.code_challenge):
        return invalid_grant("Invalid code verifier.")
    account = state.accounts.get(code.sub)
    if account is None:  # the sandbox was reset between consent and exchange
        return invalid_grant("Bad Request")
    grant = state.add_grant(account.sub, scope=code.scope)
    body = {
        "access_token": new_access_token(),
        "expires_in": state.access_token_lifetime,
        "refresh_token": grant.refresh_token,
        "scope": grant.scope,
        "token_type": "Bearer",
        "id_token": make_id_token(client_id=state.client_id, account=account, nonce=code.nonce),
    }
    return google_json(body)


def _grant(state: SandboxState, form: FormData, headers: Mapping[str, str]) -> Response:
    client_id, client_secret = _client_credentials(form, headers)
    if not client_id:
        return google_error(400, "invalid_request", "Could not determine client ID from request.")
    if not state.client_matches(client_id, client_secret):
        return google_error(401, "invalid_client", "Unauthorized")
    grant_type = form_field(form, "grant_type")
    if grant_type == "refresh_token":
        return _refresh_grant(state, form)
    if grant_type == "authorization_code":
        return _code_grant(state, form)
    return google_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")


async def token_endpoint(request: Request) -> Response:
    """Counts the request, applies any fault, then answers the grant like Google's token endpoint."""
    state = sandbox_state(request.app)
    form = await request.form()
    grant_type = form_field(form, "grant_type")
    refresh_token = form_field(form, "refresh_token") if grant_type == "refresh_token" else None
    state.count_request(grant_type, refresh_token)
    fault = state.take_fault(refresh_token)
    if fault is not None and fault.mode is FaultMode.TIMEOUT:
        if (hung_up := await _stall(request, fault.seconds)) is not None:
            return hung_up
    elif fault is not None:
        return FAULT_RESPONSES[fault.mode](fault)
    return _grant(state, form, request.headers)


async def revoke_endpoint(request: Request) -> Response:
    """Like Google's /revoke: the grant behind a refresh token ends (200), an unknown token is 400 invalid_token."""
    state = sandbox_state(request.app)
    state.count_request("revoke", None)
    token = form_field(await request.form(), "token")
    if state.grants.pop(token, None) is None:
        return google_error(400, "invalid_token", "Token expired or revoked")
    return google_json({})
