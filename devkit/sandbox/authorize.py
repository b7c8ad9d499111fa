"""GET/POST /authorize: the consent page and its decision, with Google's request checks in Google's order.

Why: the reconnect flow (authorization code + PKCE) must be clickable end to end in tests and the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from devkit.sandbox.dialect import sandbox_dialect
from devkit.sandbox.responses import form_field
from devkit.sandbox.state import PKCE_CHALLENGE, Refusal, SandboxState, sandbox_state

AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "access_type",
    "prompt",
    "login_hint",
    "response_mode",
)


def check_authorization_request(state: SandboxState, params: Mapping[str, str]) -> Refusal | None:
    """Google's checks, in its order; the first failure is returned, None when the request is fine."""
    if params.get("client_id") != state.client_id:
        return Refusal(401, "invalid_client", "The OAuth client was not found.")
    if not state.redirect_uri_allowed(params.get("redirect_uri", "")):
        return Refusal(400, "redirect_uri_mismatch", "The redirect_uri is not registered for this client.")
    if params.get("response_type") != "code":
        return Refusal(400, "unsupported_response_type", "Only response_type=code is supported.")
    for name in ("scope", "state", "code_challenge"):
        if not params.get(name):
            return Refusal(400, "invalid_request", f"Missing required parameter: {name}")
    if params.get("code_challenge_method") != "S256":
        return Refusal(400, "invalid_request", "code_challenge_method must be S256.")
    if not PKCE_CHALLENGE.fullmatch(params["code_challenge"]):
        return Refusal(400, "invalid_request", "Invalid code_challenge: expected 43 base64url characters.")
    return None


def _page(request: Request, status: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.sandbox_templates
    context["provider"] = sandbox_dialect(request.app).label
    return templates.TemplateResponse(request, "sandbox/consent.html", context, status_code=status)


def _redirect_back(redirect_uri: str, **params: str) -> Response:
    parts = urlsplit(redirect_uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=302)


async def authorize_page(request: Request) -> Response:
    """The consent page: one Allow button per sandbox account, and Deny.

    The `login_hint` account comes first and is marked, as Google preselects it: with the demo's dozens of
    accounts the one being reconnected is then the obvious choice (any other may still be picked).
    """
    state = sandbox_state(request.app)
    params = {name: request.query_params[name] for name in AUTHORIZE_PARAMS if name in request.query_params}
    refusal = check_authorization_request(state, params)
    if refusal is not None:
        return _page(request, refusal.status, refusal=refusal)
    hint = params.get("login_hint")
    accounts = sorted(state.accounts.values(), key=lambda account: account.email != hint)
    return _page(request, params=params, accounts=accounts, client_id=state.client_id, hint=hint)


async def authorize_decision(request: Request) -> Response:
    """The consent form's POST: field `account` (a sub) allows, `deny` (or no account) denies."""
    state = sandbox_state(request.app)
    form = await request.form()
    params = {name: form_field(form, name) for name in AUTHORIZE_PARAMS if form_field(form, name)}
    refusal = check_authorization_request(state, params)
    if refusal is not None:
        return _page(request, refusal.status, refusal=refusal)
    account = None if form_field(form, "deny") else state.find_account(sub=form_field(form, "account"))
    if account is None:
        return _redirect_back(params["redirect_uri"], error="access_denied", state=params["state"])
    code = state.issue_code(params, account.sub)
    return _redirect_back(params["redirect_uri"], state=params["state"], code=code, scope=params["scope"])
