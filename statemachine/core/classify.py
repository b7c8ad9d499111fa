"""Turn one token-endpoint answer into a `Verdict`, following docs/errors.md (first matching rule wins).

The rules here are the generic ones: HTTP status, the RFC 6749 / OIDC `error` strings and transport failures.
What one provider adds (Microsoft's numeric `error_codes`, a sub-error field that picks the wording, its name in
the reasons) comes in as `ProviderRules`, declared by its module in `statemachine/providers/`; this module knows
no provider by name.

Pure: no I/O, no clock, no HTTP library. Codes and reasons are our own words; nothing from a provider's
body (which may echo a token back) and no header ever reaches a Verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from statemachine.core.errors import Verdict
from statemachine.core.states import FailureKind

TRANSIENT, PERMANENT, CONFIG = FailureKind.TRANSIENT, FailureKind.PERMANENT, FailureKind.CONFIG

MAX_RETRY_AFTER_SECONDS = 3600.0  # MSAL.NET's clamp (docs/errors.md, `Retry-After`)

_OAUTH_CODE = re.compile(r"[a-z0-9_]{1,64}")
_DELAY_SECONDS = re.compile(r"[+-]?\d+(?:\.\d+)?")

_STATUS_WORDING: Mapping[int, str] = {408: "status_timeout", 429: "rate_limited"}  # rule 2, with any 5xx
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "internal_failure"})  # rule 4
_CONFIG_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_request", "invalid_scope"}
    | {"invalid_resource", "deleted_client", "disabled_client"}
)
_PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
    | {"admin_policy_enforced", "policy_enforced", "user_password_expired"}
)
# PERMANENT-admin: the mailbox owner cannot fix these alone
_ADMIN_ERRORS = frozenset({"admin_policy_enforced", "policy_enforced"})

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
    "client_secret_expired": "{p} says our app's client secret expired or was replaced; operators must install the "
    "current secret.",
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
    "signin_again": "{p} says your organisation requires you to sign in again; reconnect to continue.",
    "mfa_required": "{p} says your organisation now requires multi-factor sign-in; reconnect and complete it.",
    "conditional_access": "{p} blocked access under your organisation's Conditional Access policy (for example the "
    "device or location); your IT administrator must allow it before you reconnect.",
    "inactive_grant": "{p} ended the connection after a long time without use; reconnect to continue.",
    "sessions_revoked": "{p} ended the connection after a security change (a password reset or a sign-out of every "
    "session); reconnect to continue.",
    "account_not_found": "{p} says the account no longer exists; it cannot be reconnected unless it is restored.",
}


@dataclass(frozen=True, kw_only=True)
class ProviderRules:
    """What one provider adds to the generic rules; the defaults add nothing (HTTP, RFC 6749 and OIDC only).

    Each provider module in statemachine/providers/ declares one. `codes_field` names a JSON array of numbers in
    its error bodies (Microsoft's AADSTS `error_codes`), read for the narrow overrides of rules 5 to 7;
    `detail_field` names a string (Microsoft `suberror`, Google `error_subtype`) that only picks the wording and
    the PERMANENT-admin flag (rule 7). Wordings are keys of this module's reason table.
    """

    speaker: str = "The provider"  # who says it in a reason: "Google says access was revoked ..."
    codes_field: str | None = None
    code_prefix: str | None = None  # set: a verdict's code carries the first number, "invalid_grant/AADSTS70008"
    transient_codes: frozenset[int] = frozenset()  # rule 5: throttling or retryable failures sent as a 4xx
    config_codes: frozenset[int] = frozenset()  # rule 6: our own malformed request, whatever `error` says
    admin_codes: frozenset[int] = frozenset()  # rule 7: PERMANENT-admin, the owner cannot fix it alone
    wording_by_code: Mapping[int, str] = field(default_factory=dict)  # rules 6 and 7, before the detail's wording
    detail_field: str | None = None
    admin_details: frozenset[str] = frozenset()
    wording_by_detail: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.wording_by_code.values()) | set(self.wording_by_detail.values())
        if unknown - set(_REASONS):
            raise ValueError(f"no reason text for wording(s): {', '.join(sorted(unknown - set(_REASONS)))}")
        if (self.transient_codes or self.config_codes or self.admin_codes or self.wording_by_code) and (
            self.codes_field is None
        ):
            raise ValueError("error-code overrides need the codes_field they are read from")
        if (self.admin_details or self.wording_by_detail) and self.detail_field is None:
            raise ValueError("detail overrides need the detail_field they are read from")


GENERIC_RULES = ProviderRules()  # a provider that adds nothing to the generic rules


@dataclass(frozen=True)
class _Answer:
    """The parts of a response the rules look at."""

    rules: ProviderRules
    status: int
    payload: Mapping[str, Any] | None
    error: str | None
    codes: tuple[int, ...]
    detail: str | None

    def code(self, fallback: str) -> str:
        """The OAuth `error` when it is a plain short token, else `fallback`, plus the provider's first number."""
        code = self.error if self.error is not None and _OAUTH_CODE.fullmatch(self.error) else fallback
        if self.rules.code_prefix is not None and self.codes:
            code = f"{code}/{self.rules.code_prefix}{self.codes[0]}"
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
    rules: ProviderRules, status: int, headers: Mapping[str, str], body: bytes, *, now: datetime
) -> Verdict | None:
    """Classify a raw token-endpoint response; None means a usable success."""
    return classify_parsed(rules, status, headers, parse_json_object(body), now=now)


def classify_parsed(
    rules: ProviderRules,
    status: int,
    headers: Mapping[str, str],
    payload: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Verdict | None:
    """Classify a response whose body is already parsed (`parse_json_object`); None means a usable success.

    The rules of docs/errors.md, in order: 2) 408, 429 and any 5xx are transient whatever the body says;
    3) without a string `error`, the status decides (a 2xx with a non-empty `access_token` is the success);
    4) provider-trouble errors are transient; 5) the provider's retryable codes are transient;
    6) client/request errors (and the provider's config codes) are config; 7) dead-grant errors are permanent;
    8) anything else is transient.
    """
    detail = _string(payload, rules.detail_field) if rules.detail_field else None
    answer = _Answer(rules, status, payload, _string(payload, "error"), _codes(payload, rules.codes_field), detail)
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
        reason=_REASONS[outcome.wording].format(p=rules.speaker, status=status),
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
    error, codes, rules = answer.error, answer.codes, answer.rules
    if error in _TRANSIENT_ERRORS:
        return _Outcome(TRANSIENT, answer.code("unknown_error"), "provider_trouble")
    if rules.transient_codes.intersection(codes):
        return _Outcome(TRANSIENT, answer.code("unknown_error"), "throttled")
    if error in _CONFIG_ERRORS or rules.config_codes.intersection(codes):
        wording = _code_wording(answer) or (error if error in _CONFIG_ERRORS else "invalid_request")
        return _Outcome(CONFIG, answer.code("unknown_error"), str(wording))
    if error in _PERMANENT_ERRORS:
        admin = _is_admin(answer)
        return _Outcome(PERMANENT, answer.code("unknown_error"), _permanent_wording(answer, admin), admin)
    # Rule 8: an error we do not know yet must not disconnect anyone; transient plus an alert until labelled.
    return _Outcome(TRANSIENT, answer.code("unknown_error"), "unknown_error")


def _is_admin(answer: _Answer) -> bool:
    rules = answer.rules
    return (
        answer.error in _ADMIN_ERRORS
        or answer.detail in rules.admin_details
        or bool(rules.admin_codes.intersection(answer.codes))
    )


def _code_wording(answer: _Answer) -> str | None:
    rules = answer.rules
    return next((rules.wording_by_code[c] for c in answer.codes if c in rules.wording_by_code), None)


def _permanent_wording(answer: _Answer, admin: bool) -> str:
    rules = answer.rules
    by_code = _code_wording(answer)
    if by_code is not None:
        return by_code
    if admin:
        return answer.error if answer.error in _ADMIN_ERRORS else "admin_block"
    return rules.wording_by_detail.get(answer.detail or "", str(answer.error))


def _string(payload: Mapping[str, Any] | None, key: str) -> str | None:
    """A non-empty string field; any other type counts as absent (an `error` of 5 is no error)."""
    value = payload.get(key) if payload is not None else None
    return value if isinstance(value, str) and value else None


def _codes(payload: Mapping[str, Any] | None, name: str | None) -> tuple[int, ...]:
    """The provider's numeric error codes (Microsoft's AADSTS `error_codes`); malformed entries are ignored."""
    codes = payload.get(name) if payload is not None and name is not None else None
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
