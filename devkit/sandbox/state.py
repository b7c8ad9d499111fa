"""The sandbox provider's in-memory state: its OAuth client, accounts, grants, codes, faults and counts.

Why a separate module: the HTTP handlers (token, authorize, control API) and the demo's fault controls
share these types, and keeping the data apart from the handlers keeps each module readable.
"""

from __future__ import annotations

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
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from starlette.applications import Starlette

ISSUER = "https://accounts.google.com"
DEFAULT_SCOPE = "openid https://www.googleapis.com/auth/userinfo.email https://mail.google.com/"
ACCESS_TOKEN_LIFETIME = 3599
ID_TOKEN_LIFETIME = 3600
CODE_LIFETIME = 600.0
PROVIDER_WIDE = "*"  # fault key for faults that hit every token request

PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


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
    MFA_REQUIRED = "mfa_required"  # a policy now wants a fresh (multi-factor) sign-in: permanent, user-fixable
    CONDITIONAL_ACCESS = "conditional_access"  # an organisation's policy blocks the app: permanent, admin
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
    sub: str  # Microsoft: the object id (oid)
    tid: str | None = None  # Microsoft: the tenant (directory) the account lives in


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


def new_google_subject() -> str:
    return str(secrets.randbelow(10**21)).zfill(21)


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
    successors: dict[str, str] = field(default_factory=dict)  # a rotated refresh token -> the one issued for it
    requests_by_token: Counter[str] = field(default_factory=Counter)
    requests_by_grant_type: Counter[str] = field(default_factory=Counter)
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME  # `expires_in` of issued access tokens
    token_factory: Callable[[], str] = new_refresh_token  # the dialect's refresh-token shape
    subject_factory: Callable[[], str] = new_google_subject  # the dialect's account ids
    default_tenant: str | None = None  # the `tid` of accounts added without one (Microsoft)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # -> (refresh token, expiry)
    # strict rotation (RFC 9700 §4.14.2), in every dialect: every grant rotates, the old refresh token stops working
    # (even Microsoft's, which otherwise stays valid), and a retired token sent again revokes its whole grant
    strict_rotation: bool = False
    retired: dict[str, tuple[str, float]] = field(default_factory=dict)  # old refresh token -> (sub, retired at)
    revoked_by_reuse: dict[str, float] = field(default_factory=dict)  # sub -> when its retired token was retired

    def reset(self) -> None:
        """Forget every account, token, code, fault and count; keep the client's configuration."""
        tables = (self.accounts, self.grants, self.codes, self.faults, self.successors, self.access_tokens)
        for table in (*tables, self.retired, self.revoked_by_reuse):
            table.clear()
        self.requests_by_token.clear()
        self.requests_by_grant_type.clear()

    def add_account(self, email: str, sub: str | None = None, tid: str | None = None) -> Account:
        account = Account(email=email, sub=sub or self.subject_factory(), tid=tid or self.default_tenant)
        self.accounts[account.sub] = account
        return account

    def find_account(self, *, sub: str | None = None, email: str | None = None) -> Account | None:
        if sub is not None:
            return self.accounts.get(sub)
        return next((a for a in self.accounts.values() if a.email == email), None)

    def add_grant(self, sub: str, *, refresh_token: str | None = None, rotate: bool = False, scope: str = "") -> Grant:
        rotate = rotate or self.strict_rotation
        grant = Grant(refresh_token or self.token_factory(), sub, scope or DEFAULT_SCOPE, rotate)
        self.grants[grant.refresh_token] = grant
        return grant

    def rotate(self, grant: Grant, *, keep_old: bool = False) -> Grant:
        """Issue a new refresh token for a grant; the old one answers invalid_grant from now on unless `keep_old`
        (Microsoft does not revoke a used refresh token), which strict rotation overrides."""
        if self.strict_rotation:
            keep_old = False
            self.retired[grant.refresh_token] = (grant.sub, time.time())
        if not keep_old:
            del self.grants[grant.refresh_token]
        new = self.add_grant(grant.sub, rotate=grant.rotate, scope=grant.scope)
        self.successors[grant.refresh_token] = new.refresh_token
        if grant.refresh_token in self.faults:  # a fault follows the grant, as a revocation would
            self.faults[new.refresh_token] = self.faults.pop(grant.refresh_token)
        # access tokens follow `successors` (`honoured`): a rotation touches none of them, so it costs the same
        # after thousands of refreshes (strict rotation rotates every one)
        return new

    def newest(self, refresh_token: str) -> str:
        """The grant's current refresh token, following rotations: a fault set on an old token hits the grant."""
        while refresh_token in self.successors:
            refresh_token = self.successors[refresh_token]
        return refresh_token

    def issue_access_token(self, grant: Grant) -> str:
        """A new access token of the grant, honoured by the Gmail-like API until it expires or is revoked."""
        token = new_access_token()
        self.access_tokens[token] = (grant.refresh_token, time.monotonic() + self.access_token_lifetime)
        return token

    def honoured(self, access_token: str) -> Account | None:
        """The account an access token still works for; None once expired or revoked."""
        refresh_token, expiry = self.access_tokens.get(access_token, ("", 0.0))
        grant = self.grants.get(self.newest(refresh_token)) if refresh_token else None
        if grant is None or expiry <= time.monotonic():
            return None
        return self.accounts.get(grant.sub)

    def revoke(self, token: str) -> bool:
        """Revoke the grant of a refresh or access token (RFC 7009): its every token stops working."""
        refresh_token = token if token in self.grants else self.access_tokens.get(token, ("", 0.0))[0]
        # an access token names the refresh token it was issued with; the grant's current one may be newer.
        # Its access tokens stop working with it (`honoured` finds no grant).
        return self.grants.pop(self.newest(refresh_token) if refresh_token else "", None) is not None

    def replay_detected(self, refresh_token: str) -> bool:
        """Under strict rotation, a retired token sent again is taken for a stolen one: its whole grant ends."""
        retired = self.retired.get(refresh_token)
        if retired is None:
            return False
        sub, retired_at = retired
        for token in [t for t, g in self.grants.items() if g.sub == sub]:
            self.revoke(token)
        self.revoked_by_reuse.setdefault(sub, retired_at)
        return True

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


def sandbox_state(app: Starlette) -> SandboxState:
    """The in-memory state behind a sandbox app."""
    state: SandboxState = app.state.sandbox
    return state
