"""The /_sandbox control API: accounts, refresh tokens, faults, request counts, reset.

Why: tests, `tokenwarden simulate` and the demo's fault controls drive the provider over HTTP, so
state changes only on the server's own loop. It has no authentication: never expose the sandbox.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devkit.sandbox.state import MALFORMED_BODIES, PROVIDER_WIDE, Fault, FaultMode, SandboxRequestError, sandbox_state


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
        mode = FaultMode(str(data.get("mode")))
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
    state = sandbox_state(request.app)
    key = state.newest(key)
    state.faults[key] = fault
    target = None if key == PROVIDER_WIDE else key
    return JSONResponse({"refresh_token": target, "fault": fault.to_json()}, status_code=201)


async def delete_faults(request: Request) -> Response:
    """Clears one refresh token's fault (`?refresh_token=`), the provider-wide one (`?provider=1`), or all."""
    faults = sandbox_state(request.app).faults
    if "refresh_token" in request.query_params or "provider" in request.query_params:
        key = sandbox_state(request.app).newest(request.query_params.get("refresh_token", PROVIDER_WIDE))
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
    account = sandbox_state(request.app).add_account(email, _get(data, "sub", str), _get(data, "tid", str))
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
        "live_grants_by_sub": dict(Counter(grant.sub for grant in state.grants.values())),
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


async def bad_sandbox_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "bad_request", "detail": str(exc)}, status_code=400)
