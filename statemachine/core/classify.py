"""Turn one token-endpoint answer into a `Verdict`, following docs/errors.md (first matching rule wins).

Pure: no I/O, no clock, no HTTP library. Codes and reasons are our own words; nothing from a provider's
body (which may echo a token back) and no header ever reaches a Verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from statemachine.core.errors import Verdict
from statemachine.core.states import FailureKind

TRANSIENT, PERMANENT, CONFIG = FailureKind.TRANSIENT, FailureKind.PERMANENT, FailureKind.CONFIG

PROVIDER_NAMES: Mapping[str, str] = {"google": "Google", "microsoft": "Microsoft", "generic": "The provider"}
MAX_RETRY_AFTER_SECONDS = 3600.0  # MSAL.NET's clamp (docs/errors.md, Retry-After)

_OAUTH_CODE = re.compile(r"[a-z0-9_]{1,64}")
_DELAY_SECONDS = re.compile(r"[+-]?\d+(?:\.\d+)?")

_STATUS_WORDING: Mapping[int, str] = {408: "status_timeout", 429: "rate_limited"}  # rule 2, with any 5xx
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "internal_failure"})  # rule 4
# rule 5: Microsoft throttling / retryable failures that arrive inside a 4xx (50196 comes as invalid_grant)
_RETRYABLE_AADSTS = frozenset({50196, 90055, 90024, 50033, 50087, 90006, 90090, 90012, 70012, 90033, 50000})
_CONFIG_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_request", "invalid_scope"}
    | {"invalid_resource", "deleted_client", "disabled_client"}
)
_CONFIG_AADSTS = frozenset({9002313})  # a malformed refresh request sent as invalid_grant: our bug
_PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
    | {"admin_policy_enforced", "policy_enforced", "user_password_expired"}
)
# PERMANENT-admin: the mailbox owner cannot fix these alone
_ADMIN_ERRORS = frozenset({"admin_policy_enforced", "policy_enforced"})
_ADMIN_SUBERRORS = frozenset({"message_only", "additional_action"})
_ADMIN_AADSTS = frozenset({50057, 53003, 530032, 53000, 53001})
_ACCOUNT_DISABLED_AADSTS = 50057

_TRANSPORT_REASONS: Mapping[str, str] = {
    "connect_timeout": "Connecting to the token endpoint timed out; we will retry.",
    "read_timeout": "The token endpoint did not answer in time; we will retry.",
    "write_timeout": "Sending the token request timed out; we will retry.",
    "pool_timeout": "No outgoing connection was free in time for the token request; we will retry.",
    "connect_error": "We could not connect to the token endpoint (network, DNS or TLS problem); we will retry.",
    "read_error": "The connection broke while the token response was arriving; we will retry.",
    "write_error": "The connection broke while the token request was being sent; we will retry.",
    "remote_protocol_error": "The token endpoint sent a malformed or incomplete HTTP response; we will retry.",
    "oversized_response": "The token endpoint sent a response far larger than any token response; we will retry.",
    "network_error": "A network error interrupted the token request; we will retry.",
}
TRANSPORT_KINDS = frozenset(_TRANSPORT_REASONS)

# Reasons are templates: {p} is the provider's display name, {status} the HTTP status (an int).
_REASONS: Mapping[str, str] = {
    # transient
    "rate_limited": "{p} is rate-limiting our token requests (HTTP {status}); we will retry later.",
    "status_timeout": "{p} timed out while handling the token request (HTTP {status}); we will retry.",
    "server_trouble": "{p}'s sign-in service had a temporary failure (HTTP {status}); we will retry.",
    "no_token": "{p} answered without a usable access token; we will retry and alert operators if it goes on.",
    "redirect": "{p} redirected the token request instead of answering (HTTP {status}); we will retry later.",
    "unexplained": "{p} refused the token request without an OAuth error code (HTTP {status}); we will retry.",
    "provider_trouble": "{p} reported a temporary problem on its side; we will retry.",
    "throttled": "{p} is throttling or temporarily failing our token requests; we will back off and retry.",
    "unknown_error": "{p} returned an error code we do not recognise yet; we will retry and alert operators.",
    # config
    "http_401_empty": "{p} refused our app's credentials (HTTP 401); operators must check the client ID and secret.",
    "http_407": "Our outgoing proxy asked for authentication (HTTP 407); operators must fix the proxy settings.",
    "invalid_client": "{p} rejected our app's client ID or secret; operators must fix the app credentials.",
    "deleted_client": "{p} says our app registration was deleted; operators must restore or replace it.",
    "disabled_client": "{p} says our app registration is disabled; operators must re-enable it.",
    "unauthorized_client": "{p} says our app may not use this grant or tenant; operators must check the app setup.",
    "unsupported_grant_type": "{p} did not accept the grant type we sent; operators must fix the token request.",
    "invalid_request": "{p} says our token request was malformed; operators must fix the token request.",
    "invalid_scope": "{p} rejected the scopes we asked for; operators must check the app's scope list.",
    "invalid_resource": "{p} says the resource is not set up in this tenant; operators must check the app setup.",
    # permanent
    "invalid_grant": "{p} says access was revoked or has expired; the mailbox owner needs to reconnect.",
    "interaction_required": "{p} needs the mailbox owner to sign in again (e.g. for multi-factor) and reconnect.",
    "login_required": "{p} needs the mailbox owner to sign in again; they need to reconnect.",
    "reauth_required": "{p} requires the mailbox owner to re-authenticate (session policy) and reconnect.",
    "consent_required": "{p} says this app's permission is missing or withdrawn; the owner must reconnect and approve.",
    "user_password_expired": "{p} says the mailbox owner's password expired; they must change it, then reconnect.",
    "admin_policy_enforced": "{p} blocked access by organisation policy; the owner needs their administrator's help.",
    "policy_enforced": "{p} blocked access by an account security setting (e.g. Advanced Protection) on the mailbox.",
    "admin_block": "{p} blocked access by a security policy; the mailbox owner needs their administrator's help.",
    "account_disabled": "{p} says the account is disabled; an administrator must re-enable it before reconnecting.",
}
# Microsoft `suberror` / Google `error_subtype` only pick the wording (docs/errors.md).
_WORDING_BY_DETAIL: Mapping[str, str] = {
    **{detail: detail for detail in ("consent_required", "user_password_expired", "interaction_required")},
    "basic_action": "interaction_required",
    "invalid_rapt": "reauth_required",
    "rapt_required": "reauth_required",
}


@dataclass(frozen=True)
class _Answer:
    """The parts of a response the rules look at."""

    provider: str
    status: int
    payload: Mapping[str, Any] | None
    error: str | None
    error_codes: tuple[int, ...]

    def code(self, fallback: str) -> str:
        """The OAuth `error` when it is a plain short token, else `fallback`; Microsoft adds its first AADSTS."""
        code = self.error if self.error is not None and _OAUTH_CODE.fullmatch(self.error) else fallback
        if self.provider == "microsoft" and self.error_codes:
            code = f"{code}/AADSTS{self.error_codes[0]}"
        return code


@dataclass(frozen=True)
class _Outcome:
    kind: FailureKind
    code: str
    wording: str
    admin: bool = False


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """Return the body as a JSON object, or None for anything else (empty, not JSON, not UTF-8, too deep)."""
    if not body:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def classify_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, *, now: datetime
) -> Verdict | None:
    """Classify a raw token-endpoint response; None means a usable success."""
    return classify_parsed(provider, status, headers, parse_json_object(body), now=now)


def classify_parsed(
    provider: str, status: int, headers: Mapping[str, str], payload: Mapping[str, Any] | None, *, now: datetime
) -> Verdict | None:
    """Classify a response whose body is already parsed (`parse_json_object`); None means a usable success.

    The rules of docs/errors.md, in order: 2) 408, 429 and any 5xx are transient whatever the body says;
    3) without a string `error`, the status decides (a 2xx with a non-empty `access_token` is the success);
    4) provider-trouble errors are transient; 5) Microsoft retryable `error_codes` are transient;
    6) client/request errors (and AADSTS9002313) are config; 7) dead-grant errors are permanent;
    8) anything else is transient.

    Raises:
        ValueError: `provider` is not one of PROVIDER_NAMES.
    """
    name = PROVIDER_NAMES.get(provider)
    if name is None:
        raise ValueError(f"unknown provider: {provider!r}")
    answer = _Answer(provider, status, payload, _string(payload, "error"), _error_codes(payload))
    if status in _STATUS_WORDING or 500 <= status <= 599:
        outcome = _Outcome(TRANSIENT, answer.code(f"http_{status}"), _STATUS_WORDING.get(status, "server_trouble"))
    elif answer.error is None:
        if 200 <= status <= 299 and _string(payload, "access_token"):
            return None
        outcome = _without_error(answer)
    else:
        outcome = _with_error(answer)
    return Verdict(
        kind=outcome.kind,
        code=outcome.code,
        reason=_REASONS[outcome.wording].format(p=name, status=status),
        retry_after=parse_retry_after(headers, now),
        admin=outcome.admin,
    )


def classify_transport(kind: str) -> Verdict:
    """Classify a failure that left no HTTP response (rule 1): always transient, the same token may be resent."""
    reason = _TRANSPORT_REASONS.get(kind)
    if reason is None:
        raise ValueError(f"unknown transport failure kind: {kind!r}")
    return Verdict(kind=TRANSIENT, code=kind, reason=reason)


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Read `Retry-After` (delay-seconds or HTTP-date) as seconds clamped to [0, 3600]; None if absent or garbage.

    An HTTP-date is measured from the response's own `Date` header when it has a readable one, so a skewed
    local clock does not stretch or shrink the wait; otherwise from `now`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if _DELAY_SECONDS.fullmatch(raw):
        seconds = float(raw)  # a negative delay is nonsense but harmless: it clamps to 0
    else:
        when = _http_date(raw)
        if when is None:
            return None
        sent = _http_date(_header(headers, "date") or "")
        seconds = (when - (sent or now)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _without_error(answer: _Answer) -> _Outcome:
    """Rule 3: no OAuth `error`, so only the status speaks.

    We never mark a user PERMANENT without an explicit OAuth error code: an HTML 400/403/404 from a proxy,
    a rate-limit page or a 2xx without a token is transient, and persistent cases surface as alerts.
    """
    status = answer.status
    if 200 <= status <= 299:
        return _Outcome(
            TRANSIENT, "missing_access_token" if answer.payload is not None else "non_json_body", "no_token"
        )
    if 300 <= status <= 399:
        return _Outcome(TRANSIENT, f"http_{status}", "redirect")
    if status == 401 and answer.payload is None:  # at the token endpoint 401 is client authentication
        return _Outcome(CONFIG, "http_401_empty", "http_401_empty")
    if status == 407:
        return _Outcome(CONFIG, "http_407", "http_407")
    return _Outcome(TRANSIENT, f"http_{status}", "unexplained")


def _with_error(answer: _Answer) -> _Outcome:
    """Rules 4 to 8 for a response that carries a string `error`."""
    error, codes = answer.error, answer.error_codes
    if error in _TRANSIENT_ERRORS:
        return _Outcome(TRANSIENT, answer.code("unknown_error"), "provider_trouble")
    if _RETRYABLE_AADSTS.intersection(codes):
        return _Outcome(TRANSIENT, answer.code("unknown_error"), "throttled")
    if error in _CONFIG_ERRORS or _CONFIG_AADSTS.intersection(codes):
        wording = error if error in _CONFIG_ERRORS else "invalid_request"
        return _Outcome(CONFIG, answer.code("unknown_error"), str(wording))
    if error in _PERMANENT_ERRORS:
        admin = _is_admin(answer)
        return _Outcome(PERMANENT, answer.code("unknown_error"), _permanent_wording(answer, admin), admin)
    # Rule 8: an error we do not know yet must not disconnect anyone; transient plus an alert until labelled.
    return _Outcome(TRANSIENT, answer.code("unknown_error"), "unknown_error")


def _is_admin(answer: _Answer) -> bool:
    return (
        answer.error in _ADMIN_ERRORS
        or _string(answer.payload, "suberror") in _ADMIN_SUBERRORS
        or bool(_ADMIN_AADSTS.intersection(answer.error_codes))
    )


def _permanent_wording(answer: _Answer, admin: bool) -> str:
    if _ACCOUNT_DISABLED_AADSTS in answer.error_codes:
        return "account_disabled"
    if admin:
        return answer.error if answer.error in _ADMIN_ERRORS else "admin_block"
    detail = _string(answer.payload, "suberror") or _string(answer.payload, "error_subtype") or ""
    return _WORDING_BY_DETAIL.get(detail, str(answer.error))


def _string(payload: Mapping[str, Any] | None, key: str) -> str | None:
    """A non-empty string field; any other type counts as absent (an `error` of 5 is no error)."""
    value = payload.get(key) if payload is not None else None
    return value if isinstance(value, str) and value else None


def _error_codes(payload: Mapping[str, Any] | None) -> tuple[int, ...]:
    """Microsoft's numeric `error_codes` (the AADSTS numbers); malformed entries are ignored."""
    codes = payload.get("error_codes") if payload is not None else None
    if not isinstance(codes, list):
        return ()
    return tuple(c for c in codes[:16] if isinstance(c, int) and not isinstance(c, bool) and 0 < c < 10**10)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as httpx.Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _http_date(raw: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return when
