"""The sandbox Microsoft's dialect: identity platform v2.0 paths, AADSTS error bodies, tid/oid id_tokens, rotation.

Why: Microsoft answers differently from Google in the ways the service must handle (oauth-errors.md §4): the
meaning is in `error_codes` and `suberror`, `error_description` carries trace ids and a timestamp, every refresh
returns a new refresh token (the old one stays valid), and accounts are named by `tid` and `oid`.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from devkit.sandbox.dialect import Dialect
from devkit.sandbox.responses import b64url, malformed_response, raw_response, unsigned_jwt
from devkit.sandbox.state import ID_TOKEN_LIFETIME, Account, FaultMode

SANDBOX_TENANT = "5c1a0e6d-2b7f-4e61-9d0c-7a0de0b5a11e"  # the tenant of accounts added without one
_HEADERS = {
    "Cache-Control": "no-store, no-cache",
    "Pragma": "no-cache",
    "Expires": "-1",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "P3P": 'CP="DSP CUR OTPi IND OTRi ONL FIN"',
    "x-ms-ests-server": "2.1.19394.4 - WEULR1 ProdSlices",
}
# (status, error, AADSTS code, text, suberror) for the token endpoint's own refusals
_REFUSALS: dict[str, tuple[int, str, int, str, str | None]] = {
    "missing_client": (400, "invalid_request", 900144, "The request body must contain the following parameter: "
                       "'client_id'.", None),
    "invalid_client": (401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent "
                       "in the request is the client secret value, not the client secret ID.", None),
    "unsupported_grant_type": (400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.",
                               None),
    "missing_refresh_token": (400, "invalid_request", 900144, "The request body must contain the following "
                              "parameter: 'refresh_token'.", None),
    "unknown_refresh_token": (400, "invalid_grant", 70000, "The provided value for the input parameter "
                              "'refresh_token' or 'assertion' is not valid.", "bad_token"),
    "bad_code": (400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a "
                 "new valid code or use an existing refresh token.", None),
    "redirect_mismatch": (400, "invalid_grant", 50148, "The code_verifier or redirect URI does not match the "
                          "authorization request.", None),
    "missing_verifier": (400, "invalid_request", 900144, "The request body must contain the following parameter: "
                         "'code_verifier'.", None),
    "bad_verifier": (400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in "
                     "the authorization request.", None),
}  # fmt: skip


def microsoft_json(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Compact JSON with Microsoft's headers; `x-ms-request-id` is the error's trace id when there is one."""
    request_id = str(body.get("trace_id") or uuid.uuid4())
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers={**_HEADERS, "x-ms-request-id": request_id, **(headers or {})},
        media_type="application/json; charset=utf-8",
    )


def aadsts_error(
    status: int, error: str, code: int, text: str, suberror: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """An error body shaped like Microsoft's (oauth-errors.md §4.1), fresh trace and correlation ids included."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace_id} Correlation ID: {correlation_id} "
        f"Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    if suberror:
        body["suberror"] = suberror
    return microsoft_json(body, status, headers)


def make_microsoft_id_token(client_id: str, account: Account, nonce: str | None) -> str:
    """A v2.0 id_token naming the account by `tid` and `oid`."""
    now = int(time.time())
    tid = account.tid or SANDBOX_TENANT
    payload: dict[str, Any] = {
        "ver": "2.0", "iss": f"https://login.microsoftonline.com/{tid}/v2.0", "aud": client_id, "iat": now,
        "nbf": now, "exp": now + ID_TOKEN_LIFETIME, "tid": tid, "oid": account.sub, "email": account.email,
        "preferred_username": account.email, "name": account.email.split("@")[0],
        "sub": b64url(f"{client_id}:{account.sub}".encode())[:43],  # pairwise: per app, not the account's id
    }  # fmt: skip
    if nonce:
        payload["nonce"] = nonce
    return unsigned_jwt(payload)


MICROSOFT = Dialect(
    name="microsoft",
    mount="/microsoft",
    label="Sandbox Microsoft",
    token_path="/{tenant}/oauth2/v2.0/token",
    authorize_path="/{tenant}/oauth2/v2.0/authorize",
    refuse=lambda key: aadsts_error(*_REFUSALS[key]),
    success=microsoft_json,
    faults={
        FaultMode.REVOKE: lambda f: aadsts_error(
            400,
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token "
            "is needed. The user might have changed or reset their password.",
        ),
        FaultMode.HTTP_5XX: lambda f: aadsts_error(
            f.status, "server_error", 50000, "There was an error issuing a token or an issue with our sign-in service."
        ),
        FaultMode.RATE_LIMIT: lambda f: aadsts_error(
            429,
            "temporarily_unavailable",
            90055,
            "The request is throttled temporarily. Please try after some time.",
            headers={"Retry-After": f"{f.retry_after:g}"},
        ),
        FaultMode.MALFORMED: malformed_response(_HEADERS),
        FaultMode.INVALID_CLIENT: lambda f: aadsts_error(
            401,
            "invalid_client",
            7000222,
            "The provided client secret keys for app are expired. Visit the Azure "
            "portal to create new keys for your app.",
        ),
        FaultMode.OUTAGE: lambda f: aadsts_error(
            503, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."
        ),
        FaultMode.MFA_REQUIRED: lambda f: aadsts_error(
            400,
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or because "
            "you moved to a new location, you must use multi-factor authentication to access the app.",
            "basic_action",
        ),
        FaultMode.CONDITIONAL_ACCESS: lambda f: aadsts_error(
            400,
            "interaction_required",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            "message_only",
        ),
        FaultMode.RAW: raw_response,
    },
    id_token=make_microsoft_id_token,
    new_refresh_token=lambda: "0.AX-sandbox-" + secrets.token_urlsafe(48),
    new_subject=lambda: str(uuid.uuid4()),
    default_tenant=SANDBOX_TENANT,
    rotates=True,
)
