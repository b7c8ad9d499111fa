"""The sandbox Google's dialect: JSON bodies, headers, HTML error pages, id_tokens and fault answers like Google's.

Why: the client under test classifies failures by status, headers and body, so each fault must look
exactly like what Google sends (docs/errors.md), not like a generic error.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.responses import Response

from devkit.sandbox.dialect import Dialect
from devkit.sandbox.state import (
    ID_TOKEN_LIFETIME,
    ISSUER,
    MALFORMED_BODIES,
    Account,
    Fault,
    FaultMode,
    new_google_subject,
    new_refresh_token,
)

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
_NOT_FORWARDED = {"content-length", "transfer-encoding", "connection"}


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


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_id_token(*, client_id: str, account: Account, nonce: str | None = None) -> str:
    """An id_token shaped like Google's."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": ISSUER, "azp": client_id, "aud": client_id, "sub": account.sub}
    payload |= {"email": account.email, "email_verified": True, "iat": now, "exp": now + ID_TOKEN_LIFETIME}
    if nonce:
        payload["nonce"] = nonce
    return unsigned_jwt(payload)


def unsigned_jwt(payload: Mapping[str, Any]) -> str:
    """A JWT whose RS256 'signature' is random bytes, so never verify it."""
    header = {"alg": "RS256", "kid": "sandbox", "typ": "JWT"}
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, payload)]
    return ".".join(b64url(part) for part in [*parts, secrets.token_bytes(256)])


def form_field(form: FormData | Mapping[str, Any], key: str) -> str:
    """A form or body field as a string; missing or non-text values are "" (as Google treats them)."""
    value = form.get(key)
    return value if isinstance(value, str) else ""


def raw_response(fault: Fault) -> Response:
    headers = {k: v for k, v in fault.headers.items() if k.lower() not in _NOT_FORWARDED}
    return Response(fault.body, status_code=fault.status, headers=headers)


def malformed_response(headers: Mapping[str, str]) -> Callable[[Fault], Response]:
    """The MALFORMED fault's 200 answer, with the provider's headers."""

    def answer(fault: Fault) -> Response:
        content_type, body = MALFORMED_BODIES[fault.variant]
        return Response(body, 200, headers, media_type=content_type)

    return answer


_GOOGLE_REFUSALS: dict[str, tuple[int, str, str]] = {
    "missing_client": (400, "invalid_request", "Could not determine client ID from request."),
    "invalid_client": (401, "invalid_client", "Unauthorized"),
    "unsupported_grant_type": (400, "unsupported_grant_type", "Invalid grant_type"),
    "missing_refresh_token": (400, "invalid_request", "Missing required parameter: refresh_token"),
    "unknown_refresh_token": (400, "invalid_grant", "Token has been expired or revoked."),
    "bad_code": (400, "invalid_grant", "Bad Request"),
    "redirect_mismatch": (400, "redirect_uri_mismatch", "Bad Request"),
    "missing_verifier": (400, "invalid_grant", "Missing code verifier."),
    "bad_verifier": (400, "invalid_grant", "Invalid code verifier."),
}

GOOGLE = Dialect(
    name="google",
    mount="",
    label="Sandbox Google",
    token_path="/token",
    authorize_path="/authorize",
    refuse=lambda key: google_error(*_GOOGLE_REFUSALS[key]),
    success=google_json,
    faults={
        FaultMode.REVOKE: lambda f: invalid_grant(),
        FaultMode.HTTP_5XX: lambda f: google_error_page(f.status),
        FaultMode.RATE_LIMIT: lambda f: google_error(
            429, "rate_limit_exceeded", "Rate Limit Exceeded", {"Retry-After": f"{f.retry_after:g}"}
        ),
        FaultMode.MALFORMED: malformed_response(GOOGLE_HEADERS),
        FaultMode.INVALID_CLIENT: lambda f: google_error(401, "invalid_client", "Unauthorized"),
        FaultMode.OUTAGE: lambda f: google_error_page(503),
        # a Workspace session-control policy (RAPT) and an admin's API-access block
        FaultMode.MFA_REQUIRED: lambda f: google_json(
            {
                "error": "invalid_grant",
                "error_description": "reauth related error (invalid_rapt)",
                "error_subtype": "invalid_rapt",
            },
            400,
        ),
        FaultMode.CONDITIONAL_ACCESS: lambda f: google_error(
            400, "admin_policy_enforced", "Access to this app is restricted by your administrator."
        ),
        FaultMode.RAW: raw_response,
    },
    id_token=lambda client_id, account, nonce: make_id_token(client_id=client_id, account=account, nonce=nonce),
    new_refresh_token=new_refresh_token,
    new_subject=new_google_subject,
)
