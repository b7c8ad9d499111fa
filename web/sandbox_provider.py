"""A local stand-in for Google's OAuth 2.0 authorization and token endpoints, for tests and the demo.

Why: end-to-end tests and the demo need a provider that answers like Google (same JSON shapes and
headers, PKCE S256, optional refresh-token rotation) and that can be told to fail in each way
shared/oauth-errors.md describes, on 127.0.0.1 and without network access.

NEVER mount or run this in production: anyone who clicks "Allow" gets tokens, the /_sandbox control
API has no authentication, and every account, token and code lives only in this process's memory.

    GET/POST /authorize   consent page listing the sandbox accounts; redirects back with code + state
    POST /token           grant_type=refresh_token | authorization_code, Google-shaped JSON
    /_sandbox/...         control API for tests: accounts, tokens, faults, request counts

State is changed only by the app's handlers, on uvicorn's loop; tests use the HTTP control API (or
`sandbox_state(app)` before the app is served).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

ISSUER = "https://accounts.google.com"
DEFAULT_SCOPE = "openid https://www.googleapis.com/auth/userinfo.email https://mail.google.com/"
ACCESS_TOKEN_LIFETIME = 3599
ID_TOKEN_LIFETIME = 3600
CODE_LIFETIME = 600.0
PROVIDER_WIDE = "*"  # fault key for faults that hit every token request
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

GOOGLE_HEADERS = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "Mon, 01 Jan 1990 00:00:00 GMT",
    "Server": "scaffolding on HTTPServer2",
    "X-XSS-Protection": "0",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
}
_ERROR_PAGE = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error {status} ({title})!!1</title>
  <style>
    *{{margin:0;padding:0}}html,code{{font:15px/22px arial,sans-serif}}html{{background:#fff;color:#222;padding:15px}}\
body{{margin:7% auto 0;max-width:390px;min-height:180px;padding:30px 0 15px}}p{{margin:11px 0 22px;overflow:hidden}}\
ins{{color:#777;text-decoration:none}}
  </style>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>{status}.</b> <ins>That\u2019s an error.</ins>
  <p>{message}  <ins>That\u2019s all we know.</ins>
"""
_ERROR_PAGE_TEXT = {
    502: ("Server Error", "The server encountered a temporary error and could not complete your request.<p>"
          "Please try again in 30 seconds."),
    503: ("Service Unavailable", "The service you requested is not available at this time.<p>Please try again later."),
}  # fmt: skip
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_NOT_FORWARDED = {"content-length", "transfer-encoding", "connection"}


class SandboxRequestError(ValueError):
    """A bad call to the /_sandbox control API; answered with 400 and the message."""


class FaultMode(StrEnum):
    REVOKE = "revoke"  # 400 invalid_grant
    TIMEOUT = "timeout"  # stall `seconds` (longer than the client's timeout), then answer normally
    HTTP_5XX = "http_5xx"  # Google's HTML error page with `status` (default 502)
    RATE_LIMIT = "rate_limit"  # 429 rate_limit_exceeded with Retry-After: `retry_after`
    MALFORMED = "malformed"  # 200 whose body is `variant`: not_json | html | no_access_token | empty
    INVALID_CLIENT = "invalid_client"  # 401 invalid_client, as after a rotated client secret
    OUTAGE = "outage"  # provider-wide 503 for `seconds`, then it ends by itself
    RAW = "raw"  # exactly `status`, `headers` and `body` (replays shared/oauth-error-cases.json)


MALFORMED_BODIES = {
    "not_json": ("application/json; charset=utf-8", '{\n  "access_token": "ya29.a0AfH6SM'),
    "html": ("text/html; charset=UTF-8", "<html><body>Temporarily unavailable</body></html>"),
    "no_access_token": (
        "application/json; charset=utf-8",
        json.dumps({"expires_in": ACCESS_TOKEN_LIFETIME, "scope": DEFAULT_SCOPE, "token_type": "Bearer"}, indent=2),
    ),
    "empty": ("application/json; charset=utf-8", ""),
}


@dataclass
class Fault:
    """One injected failure; `count` is how many more requests it hits (None: until cleared)."""

    mode: FaultMode
    count: int | None = None
    seconds: float = 30.0
    status: int = 502
    retry_after: float = 30  # a fraction is allowed: time-compressed simulations scale it down
    variant: str = "not_json"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    lasts_seconds: float | None = None  # once it first hits a request, it ends by itself this much later
    ends_at: float | None = None  # time.monotonic() deadline (outage, or a hit fault with lasts_seconds)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        ends_at = data.pop("ends_at")
        data["remaining_seconds"] = None if ends_at is None else max(0.0, round(ends_at - time.monotonic(), 3))
        return data


@dataclass(frozen=True)
class Account:
    email: str
    sub: str


@dataclass
class Grant:
    """What a refresh token stands for; `rotate` makes each refresh issue a new token and kill this one."""

    refresh_token: str
    sub: str
    scope: str = DEFAULT_SCOPE
    rotate: bool = False


@dataclass(frozen=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    sub: str
    scope: str
    nonce: str | None
    expires_at: float


class Refusal(NamedTuple):
    """Why /authorize refuses a request; Google shows it on its own page rather than redirecting."""

    status: int
    error: str
    detail: str


def new_access_token() -> str:
    return "ya29.sandbox-" + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return "1//sandbox-" + secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge for a code_verifier (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class SandboxState:
    """Everything the sandbox knows: one OAuth client, its accounts, grants, codes and faults."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = ()
    accounts: dict[str, Account] = field(default_factory=dict)  # by sub
    grants: dict[str, Grant] = field(default_factory=dict)  # by refresh token
    codes: dict[str, AuthCode] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)  # by refresh token, or PROVIDER_WIDE
    requests_by_token: Counter[str] = field(default_factory=Counter)
    requests_by_grant_type: Counter[str] = field(default_factory=Counter)
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME  # `expires_in` of issued access tokens

    def reset(self) -> None:
        """Forget every account, token, code, fault and count; keep the client's configuration."""
        for table in (self.accounts, self.grants, self.codes, self.faults):
            table.clear()
        self.requests_by_token.clear()
        self.requests_by_grant_type.clear()

    def add_account(self, email: str, sub: str | None = None) -> Account:
        account = Account(email=email, sub=sub or str(secrets.randbelow(10**21)).zfill(21))
        self.accounts[account.sub] = account
        return account

    def find_account(self, *, sub: str | None = None, email: str | None = None) -> Account | None:
        if sub is not None:
            return self.accounts.get(sub)
        return next((a for a in self.accounts.values() if a.email == email), None)

    def add_grant(self, sub: str, *, refresh_token: str | None = None, rotate: bool = False, scope: str = "") -> Grant:
        grant = Grant(refresh_token or new_refresh_token(), sub, scope or DEFAULT_SCOPE, rotate)
        self.grants[grant.refresh_token] = grant
        return grant

    def rotate(self, grant: Grant) -> Grant:
        """Replace a grant's refresh token: the old one answers invalid_grant from now on."""
        del self.grants[grant.refresh_token]
        return self.add_grant(grant.sub, rotate=True, scope=grant.scope)

    def client_matches(self, client_id: str, client_secret: str) -> bool:
        return hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(client_secret, self.client_secret)

    def redirect_uri_allowed(self, uri: str) -> bool:
        """Registered URIs when given; otherwise any absolute http(s) URL without a fragment."""
        if self.redirect_uris:
            return uri in self.redirect_uris
        parts = urlsplit(uri)
        return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment

    def issue_code(self, params: Mapping[str, str], sub: str) -> str:
        code = "4/sandbox-" + secrets.token_urlsafe(32)
        self.codes[code] = AuthCode(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            code_challenge=params["code_challenge"],
            sub=sub,
            scope=params["scope"],
            nonce=params.get("nonce") or None,
            expires_at=time.monotonic() + CODE_LIFETIME,
        )
        return code

    def redeem_code(self, code: str) -> AuthCode | None:
        """Single use: a code is gone after its first exchange attempt, successful or not."""
        found = self.codes.pop(code, None)
        return found if found is not None and found.expires_at > time.monotonic() else None

    def count_request(self, grant_type: str, refresh_token: str | None) -> None:
        self.requests_by_grant_type[grant_type] += 1
        if refresh_token is not None:
            self.requests_by_token[refresh_token] += 1

    def take_fault(self, refresh_token: str | None) -> Fault | None:
        """The fault this request meets, if any, using up one of its `count`.

        An outage comes first; otherwise a token's own fault wins over a provider-wide one.
        """
        provider = self.faults.get(PROVIDER_WIDE)
        keys = [PROVIDER_WIDE] if provider and provider.mode is FaultMode.OUTAGE else []
        keys += [key for key in (refresh_token, PROVIDER_WIDE) if key is not None and key not in keys]
        now = time.monotonic()
        for key in keys:
            fault = self.faults.get(key)
            if fault is None:
                continue
            if fault.ends_at is not None and fault.ends_at <= now:
                del self.faults[key]
                continue
            if fault.lasts_seconds is not None and fault.ends_at is None:
                fault.ends_at = now + fault.lasts_seconds
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    del self.faults[key]
            return fault
        return None


# ---------------------------------------------------------------------------------------------------
# Google-shaped responses
# ---------------------------------------------------------------------------------------------------


def google_json(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """JSON the way Google's token endpoint writes it: pretty-printed, its headers, charset=utf-8."""
    return Response(
        json.dumps(body, indent=2),
        status_code=status,
        headers={**GOOGLE_HEADERS, **(headers or {})},
        media_type="application/json; charset=utf-8",
    )


def google_error(status: int, error: str, description: str, headers: Mapping[str, str] | None = None) -> Response:
    return google_json({"error": error, "error_description": description}, status, headers)


def invalid_grant(description: str = "Token has been expired or revoked.") -> Response:
    return google_error(400, "invalid_grant", description)


def google_error_page(status: int) -> Response:
    title, message = _ERROR_PAGE_TEXT.get(status, ("Server Error", "There was an error. Please try again later."))
    page = _ERROR_PAGE.format(status=status, title=title, message=message)
    return Response(page, status, {"Referrer-Policy": "no-referrer"}, media_type="text/html; charset=UTF-8")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_id_token(*, client_id: str, account: Account, nonce: str | None = None) -> str:
    """An id_token shaped like Google's; its RS256 'signature' is random bytes, so never verify it."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": "sandbox", "typ": "JWT"}
    payload: dict[str, Any] = {"iss": ISSUER, "azp": client_id, "aud": client_id, "sub": account.sub}
    payload |= {"email": account.email, "email_verified": True, "iat": now, "exp": now + ID_TOKEN_LIFETIME}
    if nonce:
        payload["nonce"] = nonce
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, payload)]
    return ".".join(_b64url(part) for part in [*parts, secrets.token_bytes(256)])


# ---------------------------------------------------------------------------------------------------
# POST /token
# ---------------------------------------------------------------------------------------------------


def _field(form: FormData | Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _client_credentials(form: FormData, headers: Mapping[str, str]) -> tuple[str, str]:
    """client_secret_basic (Authorization header) or client_secret_post (form), as Google accepts both."""
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return "", ""
        return unquote_plus(user), unquote_plus(password)
    return _field(form, "client_id"), _field(form, "client_secret")


async def _stall(request: Request, seconds: float) -> Response | None:
    """Hang like a stuck provider, then let the request go on; stop early, changing nothing, if the client hangs up."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))
        if await request.is_disconnected():
            return Response(status_code=504)  # nobody reads it
    return None


def _raw_response(fault: Fault) -> Response:
    headers = {k: v for k, v in fault.headers.items() if k.lower() not in _NOT_FORWARDED}
    return Response(fault.body, status_code=fault.status, headers=headers)


def _malformed_response(fault: Fault) -> Response:
    content_type, body = MALFORMED_BODIES[fault.variant]
    return Response(body, 200, GOOGLE_HEADERS, media_type=content_type)


FAULT_RESPONSES: dict[FaultMode, Callable[[Fault], Response]] = {
    FaultMode.REVOKE: lambda f: invalid_grant(),
    FaultMode.HTTP_5XX: lambda f: google_error_page(f.status),
    FaultMode.RATE_LIMIT: lambda f: google_error(
        429, "rate_limit_exceeded", "Rate Limit Exceeded", {"Retry-After": f"{f.retry_after:g}"}
    ),
    FaultMode.MALFORMED: _malformed_response,
    FaultMode.INVALID_CLIENT: lambda f: google_error(401, "invalid_client", "Unauthorized"),
    FaultMode.OUTAGE: lambda f: google_error_page(503),
    FaultMode.RAW: _raw_response,
}


def _refresh_grant(state: SandboxState, form: FormData) -> Response:
    token = _field(form, "refresh_token")
    if not token:
        return google_error(400, "invalid_request", "Missing required parameter: refresh_token")
    grant = state.grants.get(token)
    if grant is None:
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
    code = state.redeem_code(_field(form, "code"))
    if code is None or code.client_id != state.client_id:
        return invalid_grant("Bad Request")
    if _field(form, "redirect_uri") != code.redirect_uri:
        return google_error(400, "redirect_uri_mismatch", "Bad Request")
    verifier = _field(form, "code_verifier")
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
    grant_type = _field(form, "grant_type")
    if grant_type == "refresh_token":
        return _refresh_grant(state, form)
    if grant_type == "authorization_code":
        return _code_grant(state, form)
    return google_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")


async def token_endpoint(request: Request) -> Response:
    """Counts the request, applies any fault, then answers the grant like Google's token endpoint."""
    state = sandbox_state(request.app)
    form = await request.form()
    grant_type = _field(form, "grant_type")
    refresh_token = _field(form, "refresh_token") if grant_type == "refresh_token" else None
    state.count_request(grant_type, refresh_token)
    fault = state.take_fault(refresh_token)
    if fault is not None and fault.mode is FaultMode.TIMEOUT:
        if (hung_up := await _stall(request, fault.seconds)) is not None:
            return hung_up
    elif fault is not None:
        return FAULT_RESPONSES[fault.mode](fault)
    return _grant(state, form, request.headers)


# ---------------------------------------------------------------------------------------------------
# GET/POST /authorize
# ---------------------------------------------------------------------------------------------------

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
    if not _PKCE_CHALLENGE.fullmatch(params["code_challenge"]):
        return Refusal(400, "invalid_request", "Invalid code_challenge: expected 43 base64url characters.")
    return None


def _page(request: Request, status: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.sandbox_templates
    return templates.TemplateResponse(request, "sandbox/consent.html", context, status_code=status)


def _redirect_back(redirect_uri: str, **params: str) -> Response:
    parts = urlsplit(redirect_uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=302)


async def authorize_page(request: Request) -> Response:
    """The consent page: one Allow button per sandbox account, and Deny."""
    state = sandbox_state(request.app)
    params = {name: request.query_params[name] for name in AUTHORIZE_PARAMS if name in request.query_params}
    refusal = check_authorization_request(state, params)
    if refusal is not None:
        return _page(request, refusal.status, refusal=refusal)
    return _page(request, params=params, accounts=list(state.accounts.values()), client_id=state.client_id)


async def authorize_decision(request: Request) -> Response:
    """The consent form's POST: field `account` (a sub) allows, `deny` (or no account) denies."""
    state = sandbox_state(request.app)
    form = await request.form()
    params = {name: _field(form, name) for name in AUTHORIZE_PARAMS if _field(form, name)}
    refusal = check_authorization_request(state, params)
    if refusal is not None:
        return _page(request, refusal.status, refusal=refusal)
    account = None if _field(form, "deny") else state.find_account(sub=_field(form, "account"))
    if account is None:
        return _redirect_back(params["redirect_uri"], error="access_denied", state=params["state"])
    code = state.issue_code(params, account.sub)
    return _redirect_back(params["redirect_uri"], state=params["state"], code=code, scope=params["scope"])


# ---------------------------------------------------------------------------------------------------
# /_sandbox control API
# ---------------------------------------------------------------------------------------------------


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """A typed optional field of a control-API body (bools are not accepted as numbers)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    value = data.get(key, default)
    if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        raise SandboxRequestError(f"{key!r} has the wrong type: {value!r}")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise SandboxRequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SandboxRequestError("body must be a JSON object")
    return data


def parse_fault(data: Mapping[str, Any]) -> tuple[str, Fault]:
    """Validate a POST /_sandbox/faults body; returns the fault's key (a refresh token or PROVIDER_WIDE)."""
    try:
        mode = FaultMode(data.get("mode"))
    except ValueError:
        raise SandboxRequestError(f"mode must be one of {[m.value for m in FaultMode]}") from None
    key = _get(data, "refresh_token", str) or PROVIDER_WIDE
    if mode is FaultMode.OUTAGE and key != PROVIDER_WIDE:
        raise SandboxRequestError("an outage is provider-wide: leave out refresh_token")
    if mode is FaultMode.RAW and "status" not in data:
        raise SandboxRequestError("a raw fault needs status (and usually headers and body)")
    default_status = 502 if mode is FaultMode.HTTP_5XX else 200
    fault = Fault(
        mode=mode,
        count=_get(data, "count", int),
        seconds=float(_get(data, "seconds", (int, float), 60.0 if mode is FaultMode.OUTAGE else 30.0)),
        status=_get(data, "status", int, default_status),
        retry_after=_get(data, "retry_after", (int, float), 30),
        variant=_get(data, "variant", str, "not_json"),
        headers={str(k): str(v) for k, v in (_get(data, "headers", dict) or {}).items()},
        body=_get(data, "body", str, ""),
        lasts_seconds=_get(data, "lasts_seconds", (int, float)),
    )
    _check_fault(fault)
    if mode is FaultMode.OUTAGE:
        fault.ends_at = time.monotonic() + fault.seconds
    return key, fault


def _check_fault(fault: Fault) -> None:
    if fault.count is not None and fault.count < 1:
        raise SandboxRequestError("count must be at least 1 (leave it out for 'until cleared')")
    if fault.seconds < 0 or fault.retry_after < 0 or (fault.lasts_seconds or 0) < 0:
        raise SandboxRequestError("seconds, retry_after and lasts_seconds must not be negative")
    if fault.mode is FaultMode.HTTP_5XX and not 500 <= fault.status <= 599:
        raise SandboxRequestError("http_5xx needs a status from 500 to 599")
    if not 200 <= fault.status <= 599:
        raise SandboxRequestError("status must be an HTTP status code")
    if fault.variant not in MALFORMED_BODIES:
        raise SandboxRequestError(f"variant must be one of {sorted(MALFORMED_BODIES)}")


async def post_fault(request: Request) -> Response:
    key, fault = parse_fault(await _json_body(request))
    sandbox_state(request.app).faults[key] = fault
    target = None if key == PROVIDER_WIDE else key
    return JSONResponse({"refresh_token": target, "fault": fault.to_json()}, status_code=201)


async def delete_faults(request: Request) -> Response:
    """Clears one refresh token's fault (`?refresh_token=`), the provider-wide one (`?provider=1`), or all."""
    faults = sandbox_state(request.app).faults
    if "refresh_token" in request.query_params or "provider" in request.query_params:
        key = request.query_params.get("refresh_token", PROVIDER_WIDE)
        return JSONResponse({"cleared": int(faults.pop(key, None) is not None)})
    cleared = len(faults)
    faults.clear()
    return JSONResponse({"cleared": cleared})


async def list_faults(request: Request) -> Response:
    faults = sandbox_state(request.app).faults
    provider = faults.get(PROVIDER_WIDE)
    tokens = {key: fault.to_json() for key, fault in faults.items() if key != PROVIDER_WIDE}
    return JSONResponse({"provider": provider.to_json() if provider else None, "tokens": tokens})


async def post_account(request: Request) -> Response:
    data = await _json_body(request)
    email = _get(data, "email", str)
    if not email or "@" not in email:
        raise SandboxRequestError("email is required")
    account = sandbox_state(request.app).add_account(email, _get(data, "sub", str))
    return JSONResponse(asdict(account), status_code=201)


async def list_accounts(request: Request) -> Response:
    return JSONResponse({"accounts": [asdict(a) for a in sandbox_state(request.app).accounts.values()]})


async def post_token(request: Request) -> Response:
    """Registers a refresh token for an account given by `sub` or `email` (optionally rotating)."""
    data = await _json_body(request)
    state = sandbox_state(request.app)
    account = state.find_account(sub=_get(data, "sub", str), email=_get(data, "email", str))
    if account is None:
        raise SandboxRequestError("no sandbox account with that sub or email: POST /_sandbox/accounts first")
    grant = state.add_grant(
        account.sub,
        refresh_token=_get(data, "refresh_token", str),
        rotate=_get(data, "rotate", bool, False),
        scope=_get(data, "scope", str, ""),
    )
    return JSONResponse({**asdict(grant), "email": account.email}, status_code=201)


async def get_requests(request: Request) -> Response:
    state = sandbox_state(request.app)
    body = {
        "total": state.requests_by_grant_type.total(),
        "by_grant_type": dict(state.requests_by_grant_type),
        "by_refresh_token": dict(state.requests_by_token),
    }
    return JSONResponse(body)


async def reset_requests(request: Request) -> Response:
    state = sandbox_state(request.app)
    state.requests_by_grant_type.clear()
    state.requests_by_token.clear()
    return JSONResponse({"total": 0, "by_grant_type": {}, "by_refresh_token": {}})


async def reset_all(request: Request) -> Response:
    """Back to a blank provider, so one served sandbox can be shared by many tests."""
    sandbox_state(request.app).reset()
    return JSONResponse({"reset": True})


async def _bad_sandbox_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "bad_request", "detail": str(exc)}, status_code=400)


# ---------------------------------------------------------------------------------------------------
# App
# ---------------------------------------------------------------------------------------------------


def sandbox_state(app: Starlette) -> SandboxState:
    """The in-memory state behind a sandbox app."""
    state: SandboxState = app.state.sandbox
    return state


def create_sandbox_app(
    *, client_id: str, client_secret: str, redirect_uris: tuple[str, ...] = (),
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME,
) -> Starlette:  # fmt: skip
    """A fresh sandbox provider for one OAuth client; `redirect_uris` empty accepts any http(s) URL.

    `access_token_lifetime` (seconds) is shortened by time-compressed simulations (`tokenwarden simulate`).
    """
    routes = [
        Route("/authorize", authorize_page, methods=["GET"], name="authorize"),
        Route("/authorize", authorize_decision, methods=["POST"], name="authorize_decision"),
        Route("/token", token_endpoint, methods=["POST"], name="token"),
        Route("/_sandbox/accounts", post_account, methods=["POST"]),
        Route("/_sandbox/accounts", list_accounts, methods=["GET"]),
        Route("/_sandbox/tokens", post_token, methods=["POST"]),
        Route("/_sandbox/faults", post_fault, methods=["POST"]),
        Route("/_sandbox/faults", delete_faults, methods=["DELETE"]),
        Route("/_sandbox/faults", list_faults, methods=["GET"]),
        Route("/_sandbox/requests", get_requests, methods=["GET"]),
        Route("/_sandbox/requests", reset_requests, methods=["DELETE"]),
        Route("/_sandbox/reset", reset_all, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={SandboxRequestError: _bad_sandbox_request})
    app.state.sandbox = SandboxState(client_id, client_secret, tuple(redirect_uris))
    app.state.sandbox.access_token_lifetime = access_token_lifetime
    app.state.sandbox_templates = Jinja2Templates(directory=TEMPLATES_DIR)
    return app
